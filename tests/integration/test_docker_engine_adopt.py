"""docker_engine adopts the Docker engine it finds and never lets apt remove one.

A scratch host (scratch-3, a bare simulated host of these tests' own) gets
Docker the way many lab admins install it: docker-ce from Docker's repository
(here the documented test double, tests/fixtures/docker-ce-double, from the
lab-in-a-box's signed apt repository), a deb822 source and key written by
hand, and a container running on it. The host layer must then keep that
engine and that container (same process, same start time, no restart), and
an explicit `docker_engine_source: distro`, which would make apt replace
docker-ce with docker.io, must be refused in the preflight with no change.
The `docker` source is proven on a bare host, as is check mode.

Run with `pytest -s` to see the measured figures.
"""
from __future__ import annotations

import json
import re
import time

import pytest

from conftest import PlaybookRun, ScratchHost


APT_URL = "http://effdet-lab-apt:8080/docker/linux/debian"
DOCKER_PACKAGES = ["docker-ce", "docker-ce-cli", "containerd.io"]
DOUBLE_VERSION = "5:20.10.24~3-0~debian-bookworm"

# What an admin types, after Docker's install guide for Debian (a deb822
# source and the key in /etc/apt/keyrings); the key comes over the
# lab-in-a-box's local http. python3 stands in for curl, which the bare host lacks.
ADMIN_INSTALLS_DOCKER_CE = f"""
systemctl is-system-running --wait >/dev/null || true
install -m 0755 -d /etc/apt/keyrings
python3 -c "import urllib.request as u; open('/etc/apt/keyrings/docker.asc', 'wb').write(u.urlopen('{APT_URL}/gpg').read())"
chmod a+r /etc/apt/keyrings/docker.asc
cat > /etc/apt/sources.list.d/docker.sources <<EOF
Types: deb
URIs: {APT_URL}
Suites: bookworm
Components: stable
Signed-By: /etc/apt/keyrings/docker.asc
EOF
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-ce docker-ce-cli containerd.io docker-buildx-plugin \
    busybox-static >/dev/null
"""

# A tiny local image (no registry needed) and the container the users run.
ADMIN_STARTS_A_CONTAINER = """
d=$(mktemp -d); mkdir -p "$d/bin"; cp /bin/busybox "$d/bin/"; ln -s busybox "$d/bin/sleep"
tar -C "$d" -c . | docker import - labbox/busybox >/dev/null
rm -rf "$d"
docker run -d --name pre-existing --restart no labbox/busybox sleep 1000000 >/dev/null
"""


def installed(host: ScratchHost) -> dict[str, str]:
    """Package -> version, for the packages dpkg has installed."""
    out = host.sh("dpkg-query -W -f '${Package} ${Version} ${db:Status-Abbrev}\\n'").stdout
    return {f[0]: f[1] for f in (line.split() for line in out.splitlines()) if len(f) == 3 and f[2] == "ii"}


def container_state(host: ScratchHost) -> dict:
    fmt = "{{json .State}}|{{.RestartCount}}"
    state, restarts = host.sh(f"docker inspect --format '{fmt}' pre-existing").stdout.strip().split("|")
    result = json.loads(state)
    result["RestartCount"] = int(restarts)
    result["uptime_s"] = int(host.sh(f"ps -o etimes= -p {result['Pid']}").stdout.strip())
    return result


def dockerd_pid(host: ScratchHost) -> int:
    return int(host.sh("systemctl show --property MainPID --value docker.service").stdout.strip())


def timed_play(host: ScratchHost, *args: str) -> tuple[PlaybookRun, float]:
    started = time.monotonic()
    run = host.play("playbooks/host.yml", *args)
    return run, time.monotonic() - started


def failed_tasks(output: str) -> list[str]:
    """The headers ("TASK [role : name]") of the tasks that failed on some host."""
    failed, task = [], ""
    for line in output.splitlines():
        header = re.match(r"^TASK \[(.*)\]", line)
        if header:
            task = header[1]
        elif re.match(r"^(fatal|failed): \[", line):
            failed.append(task)
    return failed


@pytest.mark.scratch_index(3)
def test_an_admins_docker_ce_and_its_container_are_kept(scratch_host: ScratchHost):
    host = scratch_host
    host.sh(ADMIN_INSTALLS_DOCKER_CE)
    host.sh(ADMIN_STARTS_A_CONTAINER)
    packages = installed(host)
    assert all(packages.get(p) == DOUBLE_VERSION for p in ["docker-ce", "docker-ce-cli"]), packages
    assert "containerd.io" in packages and "docker.io" not in packages, packages
    before, dockerd_before = container_state(host), dockerd_pid(host)
    assert before["Running"], before

    first, first_s = timed_play(host)
    assert first.rc == 0, first.tail(5000)
    assert "keeps the installed Docker engine (docker-ce 5:20.10.24~3-0~debian-bookworm" in first.output
    packages = installed(host)
    assert all(p in packages for p in DOCKER_PACKAGES), packages
    assert packages["docker-ce"] == DOUBLE_VERSION and "docker.io" not in packages, packages
    assert "python3-docker" in packages and "python3-requests" in packages, packages
    after, dockerd_after = container_state(host), dockerd_pid(host)
    assert after["Running"] and after["RestartCount"] == 0, after
    assert (after["Pid"], after["StartedAt"]) == (before["Pid"], before["StartedAt"]), (before, after)
    assert dockerd_after == dockerd_before, (dockerd_before, dockerd_after)
    assert after["uptime_s"] >= before["uptime_s"] + int(first_s) - 1

    second, second_s = timed_play(host)
    assert second.rc == 0 and second.changed() == 0, second.tail(5000)

    # An explicit distro source would make apt replace docker-ce with docker.io.
    refused, refused_s = timed_play(host, "-e", "docker_engine_source=distro")
    text = " ".join(refused.output.split())
    assert refused.rc != 0, refused.tail(5000)
    assert "docker_engine_source=distro on scratch-3: installing docker.io" in text, text[-3000:]
    assert "would make apt REMOVE" in text and "Nothing was changed." in text, text[-3000:]
    removed = re.search(r"would make apt REMOVE (.*?)\. docker_engine never", text)
    assert removed and set(DOCKER_PACKAGES) <= set(removed[1].split(", ")), text[-3000:]
    assert "docker_engine_allow_removals" in text
    assert failed_tasks(refused.output) == ["docker_engine : Refuse an install that would make apt remove packages"]
    assert refused.changed() == 0, refused.tail(5000)
    assert installed(host) == packages
    last = container_state(host)
    assert (last["Pid"], last["StartedAt"], last["RestartCount"]) == (before["Pid"], before["StartedAt"], 0)
    assert dockerd_pid(host) == dockerd_before

    print(f"\n[docker_engine adopt] docker-ce double on scratch-3, container 'pre-existing' running:\n"
          f"  first converge (auto adopts docker-ce): {first_s:.1f} s, changed={first.changed()}\n"
          f"  second run: {second_s:.1f} s, changed={second.changed()}\n"
          f"  container uptime before/after the first converge: {before['uptime_s']} s / {after['uptime_s']} s "
          f"(PID {before['Pid']} both, StartedAt {before['StartedAt']} both, RestartCount {after['RestartCount']}); "
          f"dockerd PID {dockerd_before} both\n"
          f"  docker_engine_source=distro refused in the preflight: {refused_s:.1f} s, changed={refused.changed()}, "
          f"apt would have removed {removed[1]}; container uptime then {last['uptime_s']} s")


@pytest.mark.scratch_index(3)
def test_docker_source_installs_docker_ce_on_a_bare_host_and_check_mode_is_clean(scratch_host: ScratchHost):
    host = scratch_host
    host.sh("systemctl is-system-running --wait >/dev/null || true")

    # Check mode on a bare host: docker_engine must not fail (nothing is installed yet).
    check, check_s = timed_play(host, "--check")
    engine_failures = [t for t in failed_tasks(check.output) if t.startswith("docker_engine")]
    assert engine_failures == [], check.tail(5000)
    assert "docker.io" not in installed(host)

    extra = ["-e", "docker_engine_source=docker"]
    first, first_s = timed_play(host, *extra)
    assert first.rc == 0, first.tail(5000)
    packages = installed(host)
    assert packages.get("docker-ce") == DOUBLE_VERSION and packages.get("docker-ce-cli") == DOUBLE_VERSION, packages
    assert "containerd.io" in packages and "docker-buildx-plugin" in packages and "docker.io" not in packages
    source = host.read("/etc/apt/sources.list.d/docker.sources")
    assert APT_URL in source and "Signed-By: /etc/apt/keyrings/docker." in source, source
    # Debian's dockerd inside the double says so: 20.10.24+dfsg1.
    assert host.sh("docker version --format '{{.Server.Version}}'").stdout.startswith("20.10.24")

    second, second_s = timed_play(host, *extra)
    assert second.rc == 0 and second.changed() == 0, second.tail(5000)
    print(f"\n[docker_engine docker source] bare scratch-3:\n"
          f"  host.yml --check on the bare host: {check_s:.1f} s, rc={check.rc}, changed={check.changed()}, "
          f"failed tasks: {failed_tasks(check.output) or 'none'}\n"
          f"  first converge (docker-ce double through apt_signed_source): {first_s:.1f} s, "
          f"changed={first.changed()}\n"
          f"  second run: {second_s:.1f} s, changed={second.changed()}")
