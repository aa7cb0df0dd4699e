"""python -m labbox {up,services,standin,demo,down,status}: manage the lab-in-a-box."""
from __future__ import annotations

import argparse
import sys

from . import aptrepo, demo, demo_data, engine, gpu_standin, hosts, images, inventory, services, tf21base, tfbase
from .shell import docker, log


def bring_up_services() -> aptrepo.AptRepo:
    engine.ensure_engine()
    engine.ensure_tools("debootstrap", "gpg", "apt-ftparchive", "dpkg-deb", "ssh", "ssh-keygen", "rsync")
    base = images.ensure_base()
    services_image = images.ensure_built("services")
    images.ensure_built("simhost")
    services.ensure_network()
    services.ensure_registry(services_image)
    services.serve_image(base, "debian:bookworm")
    tfbase.ensure_served(base)
    repo = aptrepo.ensure_repo()
    services.ensure_apt_server(services_image, repo.root)
    inventory.write_generated_vars(repo)
    demo_data.ensure_demo_dataset()
    return repo


def cmd_up(args: argparse.Namespace) -> int:
    bring_up_services()
    key = hosts.ensure_ssh_key()
    started = hosts.ensure_hosts(args.hosts, "effdet-lab/simhost:latest", key, fresh=args.fresh)
    slurm = None
    if getattr(args, "executor", "exec") == "slurm":
        # The hosts as a Slurm cluster: labhost-1 the controller, one stand-in GPU
        # on each host (labbox/gpu_standin.py, a test double).
        slurm = {h.name: gpu_standin.install(h.container, 1) for h in started}
    path = inventory.write_inventory(started, key, slurm=slurm)
    log(f"{len(started)} simulated host(s) up; inventory: {path}"
        + (" (a Slurm cluster, controller labhost-1)" if slurm else ""))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    args.fresh = not args.reuse
    cmd_up(args)
    extra = list(args.ansible_args)
    if args.executor == "slurm":
        extra = ["-e", "effdet_tasks_executor=slurm", *extra]
    return demo.run_demo(args.hosts, extra, executor=args.executor)


def cmd_services(_: argparse.Namespace) -> int:
    bring_up_services()
    log("services up: registry mirror and apt repository")
    return 0


def cmd_standin(_: argparse.Namespace) -> int:
    """The stand-in for the recipe's tensorflow/tensorflow:2.1.0-gpu-py3, built once and served.

    Not part of `services`: it needs a CPython 3.6 tree on the controller
    (tf21base.python36_prefix), which only the tf2.1-gpu tests need."""
    ref = tf21base.ensure_served(images.ensure_base())
    log(f"{ref} served as {tf21base.HUB_NAME}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    if not engine.engine_answers():
        log("no docker engine answers: nothing to tear down")
        return 0
    for name in hosts.existing_hosts() + hosts.existing_hosts("scratch"):
        hosts.remove_host(name)
    if not args.keep_services:
        for name in (services.REGISTRY, services.APT_SERVER):
            docker("rm", "-f", name, check=False)
        docker("volume", "rm", "-f", "effdet-lab-registry-data", check=False)
        docker("network", "rm", services.NETWORK, check=False)
    if args.images:
        out = docker("images", "--format", "{{.Repository}}:{{.Tag}}", "effdet-lab/*").stdout.split()
        if out:
            docker("rmi", "-f", *out, check=False)
    log(f"torn down; removed {hosts.clean_cgroups()} leftover cgroup folder(s)")
    return 0


def cmd_status(_: argparse.Namespace) -> int:
    print(docker("ps", "-a", "--filter", f"label={services.LABEL}",
                 "--format", "table {{.Names}}\t{{.Status}}\t{{.Ports}}").stdout)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labbox", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="services plus N simulated GPU hosts, and the inventory")
    up.add_argument("--hosts", type=int, default=1)
    up.add_argument("--fresh", action="store_true", help="recreate the hosts as bare servers")
    up.set_defaults(func=cmd_up)
    dem = sub.add_parser("demo", help="bare hosts, converge site.yml twice, prove changed=0, write results/")
    dem.add_argument("--hosts", type=int, default=1)
    dem.add_argument("--reuse", action="store_true", help="keep already converged hosts")
    dem.add_argument("--executor", choices=("exec", "slurm"), default="exec",
                     help="slurm: the hosts also form a Slurm cluster and the stages run as its jobs")
    dem.add_argument("ansible_args", nargs="*", help="passed to ansible-playbook (after --)")
    dem.set_defaults(func=cmd_demo)
    sub.add_parser("services", help="registry mirror and apt repository only").set_defaults(func=cmd_services)
    sub.add_parser("standin", help=f"build (once) and serve {tf21base.HUB_NAME} (services must be up)"
                   ).set_defaults(func=cmd_standin)
    down = sub.add_parser("down", help="remove hosts, services, volumes and leftover cgroups")
    down.add_argument("--keep-services", action="store_true")
    down.add_argument("--images", action="store_true", help="also remove the effdet-lab/* images")
    down.set_defaults(func=cmd_down)
    sub.add_parser("status").set_defaults(func=cmd_status)
    args = parser.parse_args(argv)
    if getattr(args, "hosts", 1) < 0:
        parser.error("--hosts must be >= 0")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
