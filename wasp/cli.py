"""The `wasp` command: one program, one image, a subcommand per role.

Like CloudNativePG's single binary, the same distribution is the operator
(`wasp operator`), the router in front (`wasp master`), the per-shard session
holder (`wasp worker`) and the all-in-one local run (`wasp dev`).
"""

from __future__ import annotations

import click

from wasp import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wasp")
def main() -> None:
    """WhatsApp sessions on Kubernetes, sharded by slot."""


def _not_yet(role: str, issue: int) -> None:
    raise click.ClickException(f"`wasp {role}` is not built yet (tracked in issue {issue})")


@main.command()
def operator() -> None:
    """Run the Kubernetes operator: WhatsAppShard resources -> StatefulSets."""
    _not_yet("operator", 3)


@main.command()
def master() -> None:
    """Run the master: route /api/* by slot, fan live events out over Socket.IO."""
    _not_yet("master", 5)


@main.command()
def worker() -> None:
    """Run one shard's worker: keep the WhatsApp sessions of its slot range alive."""
    _not_yet("worker", 4)


@main.command()
def dev() -> None:
    """Run master and workers locally from a shards file (simulator backend)."""
    _not_yet("dev", 6)


if __name__ == "__main__":
    main()
