"""Mitogen's linear strategy, opt-in: ANSIBLE_STRATEGY=mitogen_linear ansible-playbook site.yml.

ansible.cfg points strategy_plugins here, so the strategy is found wherever the
venv's site-packages lie; the plugin itself is mitogen's (requirements.txt pins
it). bench/rerun_profile.py measures it against the default ssh connection.
"""
from ansible_mitogen.plugins.strategy.mitogen_linear import StrategyModule  # noqa: F401
