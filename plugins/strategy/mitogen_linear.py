"""Mitogen's linear strategy, the one ansible.cfg runs every play through.

ansible.cfg points strategy_plugins here, so the strategy is found wherever the
venv's site-packages lie; the plugin itself is mitogen's (requirements.txt pins
it). ANSIBLE_STRATEGY=linear goes back to Ansible's own; bench/rerun_profile.py
measures both side by side.
"""
from ansible_mitogen.plugins.strategy.mitogen_linear import StrategyModule  # noqa: F401
