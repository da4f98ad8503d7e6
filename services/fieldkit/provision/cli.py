"""``fieldkit policy ...`` and ``fieldkit image ...``: the provisioning admin's commands (R31).

These commands work on the build machine and need no device config.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fieldkit.policies import (
    KINDS,
    ansible_vars,
    default_policy_dir,
    load_policies,
    render,
    write_rendered,
)

# Big and disposable: never inside the repository. Root-only (the build runs as root).
DEFAULT_BUILD_DIR = Path("/var/tmp/fieldkit-build")  # noqa: S108


def cmd_policy_check(args: argparse.Namespace) -> int:
    policies = load_policies(args.policies)
    kinds = ", ".join(KINDS)
    print(f"policies ok: {kinds} (services: max exposure {policies.services.max_exposure})")
    return 0


def cmd_policy_render(args: argparse.Namespace) -> int:
    policies = load_policies(args.policies)
    kinds = list(KINDS) if args.kind == "all" else [args.kind]
    for kind in kinds:
        files = render(policies, kind, args.role)
        if args.root is not None:
            for written in write_rendered(files, args.root):
                print(written)
            continue
        for path, body in sorted(files.items()):
            if len(files) > 1 or len(kinds) > 1:
                print(f"# ==> {path} <==")
            sys.stdout.write(body)
    return 0


def cmd_policy_vars(args: argparse.Namespace) -> int:
    directory = (args.policies or default_policy_dir()).resolve()
    values = ansible_vars(load_policies(directory), args.role, directory)
    print(json.dumps(values, ensure_ascii=False))
    return 0


def cmd_image_build(args: argparse.Namespace) -> int:
    from fieldkit.provision.image import BuildOptions, ImageBuild, admin_vars

    options = BuildOptions(
        role=args.role,
        out=(args.out or DEFAULT_BUILD_DIR / args.role).resolve(),
        cache=(args.cache or DEFAULT_BUILD_DIR / "cache").resolve(),
        policies=(args.policies or default_policy_dir()).resolve(),
        reuse_rootfs=args.reuse_rootfs,
        rerun=not args.no_rerun,
        pack=not args.no_pack,
        kit_ca=args.kit_ca.resolve() if args.kit_ca else None,
        admin_keys=args.admin_ssh_keys,
        admin_password_hash=args.admin_password_hash,
    )
    admin_vars(args.role, options)  # refuse a wrong admin file before the long build starts
    result = ImageBuild(options).run()
    print(f"rootfs:   {result.rootfs}")
    if result.disk is not None:
        print(f"image:    {result.disk} ({result.disk.stat().st_size / 2**30:.2f} GiB)")
    print(f"manifest: {result.manifest}")
    if result.rerun is not None and result.rerun.changed:
        print(f"fieldkit: rerun changed {result.rerun.changed} task(s): roles not idempotent")
        return 1
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Attach the ``policy`` and ``image`` command groups to the main parser."""
    policy = sub.add_parser("policy", help="device policies (policies/*.yaml)")
    policy.add_argument(
        "--policies", type=Path, default=None, help="policy directory (default: policies/)"
    )
    psub = policy.add_subparsers(dest="policy_command", required=True)

    check = psub.add_parser("check", help="validate every policy file")
    check.set_defaults(standalone=cmd_policy_check)

    rend = psub.add_parser("render", help="print (or write) the files a policy installs")
    rend.add_argument("kind", choices=[*KINDS, "all"])
    rend.add_argument("--role", choices=["tablet", "hub"], default="tablet")
    rend.add_argument("--root", type=Path, default=None, help="write below this directory")
    rend.set_defaults(standalone=cmd_policy_render)

    avars = psub.add_parser("vars", help="print the Ansible variables derived from policies")
    avars.add_argument("--role", choices=["tablet", "hub"], default="tablet")
    avars.set_defaults(standalone=cmd_policy_vars)

    image = sub.add_parser("image", help="build device images")
    isub = image.add_subparsers(dest="image_command", required=True)
    build = isub.add_parser(
        "build", help="mmdebstrap + Ansible (chroot) + bootable raw disk image + manifest"
    )
    build.add_argument("role", choices=["tablet", "hub"])
    build.add_argument("--out", type=Path, default=None, help=f"default {DEFAULT_BUILD_DIR}/ROLE")
    build.add_argument(
        "--cache",
        type=Path,
        default=None,
        help=f"apt/ansible cache, default {DEFAULT_BUILD_DIR}/cache",
    )
    build.add_argument("--policies", type=Path, default=None, help="policy directory")
    build.add_argument("--reuse-rootfs", action="store_true", help="skip mmdebstrap if built")
    build.add_argument("--no-rerun", action="store_true", help="skip the idempotence rerun")
    build.add_argument("--no-pack", action="store_true", help="rootfs only, no disk image")
    build.add_argument(
        "--kit-ca", type=Path, default=None, help="the kit CA certificate tablets enrol against"
    )
    build.add_argument(
        "--admin-ssh-keys",
        type=Path,
        default=None,
        help="hub: the provisioning admin's SSH public keys (authorized_keys lines)",
    )
    build.add_argument(
        "--admin-password-hash",
        type=Path,
        default=None,
        help="hub: a file with the admin's crypt hash (mkpasswd -m yescrypt), for sudo only",
    )
    build.set_defaults(standalone=cmd_image_build)
