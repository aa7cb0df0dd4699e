"""What `sinfo` says about Slurm nodes, read once for the slurm role and the verifier.

The slurm role's last task waits until every node takes jobs
(roles/slurm/filter_plugins/slurm_cluster.py, slurm_nodes_not_ready), and the
verifier checks each node the same way (tests/infra/test_slurm.py). Both read
`sinfo --noheader --Node --format '%N|%t|%E'`: the node, its compact state and
the reason an admin or Slurm gave. Pure Python 3.6+, no Ansible imports.
"""
from typing import Dict, List, Sequence, Tuple

# sinfo's compact states (%t) of a node that takes jobs. A flag after the state
# makes it not ready: '*' (the controller does not hear the node), '~' (powered
# off), '#', '!', '%', '$', '@'.
READY_STATES = ("idle", "mix", "alloc", "comp", "plnd")


def parse_sinfo(sinfo: str) -> Dict[str, Tuple[str, str]]:
    """{node: (state, reason)} of `sinfo --Node --format '%N|%t|%E'` lines; reason '' when none."""
    seen = {}  # type: Dict[str, Tuple[str, str]]
    for line in str(sinfo or "").splitlines():
        parts = line.strip().split("|", 2)
        if len(parts) >= 2 and parts[0]:
            seen[parts[0]] = (parts[1], parts[2].strip() if len(parts) > 2 else "")
    return seen


def is_ready(state: str) -> bool:
    """True for a compact state of a node that takes jobs (no flag after it)."""
    return state in READY_STATES


def nodes_not_ready(sinfo: str, names: Sequence[str]) -> List[str]:
    """The nodes of `names` that do not take jobs, each as 'node (state: reason)';
    a node sinfo does not list is 'node (not in the partition)'."""
    seen = parse_sinfo(sinfo)
    not_ready = []
    for name in names:
        if name not in seen:
            not_ready.append("{} (not in the partition)".format(name))
            continue
        state, reason = seen[name]
        if not is_ready(state):
            shown = reason if reason and reason != "none" else "no reason given"
            not_ready.append("{} ({}: {})".format(name, state, shown))
    return not_ready
