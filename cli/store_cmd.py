"""``clipcache convert``: rewrite a store of an older layout into the current one."""

from __future__ import annotations

import sys

import click

from . import _params


@click.command()
@_params.storage_options
@click.argument("old")
@click.argument("new")
@click.option("--batch", default=64, show_default=True, help="Entries per batch commit.")
def convert(old, new, batch):
    """Copy every committed entry and document of store OLD (layout 1: one array per video) into
    a new store NEW in the packed-segment layout. OLD is only read. Exit 1 when some entries were
    left out (their arrays do not match their records)."""
    from cachekit.cachekey import PACKED_GROUPS
    from clipcache.stores.convert import convert_store

    rep = convert_store(old, new, batch=batch, packable=PACKED_GROUPS)
    click.echo(rep.line())
    for b in rep.bad:
        click.echo(f"bad (left out, re-extract it): {b}", err=True)
    if rep.bad:  # as verify: the new store lacks what was left out
        sys.exit(1)
