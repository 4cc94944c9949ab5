"""`relay consent import|show`: the consent records behind P-CONSENT-RECORD.

A CSV import has the columns `address, consented_at, source, form_version, consent_text,
method` (a header row naming them is expected; `consented_at` in ISO 8601, a time without
a zone is taken as UTC; `method` one of web-form, double-opt-in, paper, verbal). Rows that
cannot be proof are refused with their line number and reason; the rest are stored in
batches, with a progress bar. `show` prints everything held for one address, for an admin,
a supervisory authority or the data subject.
"""

import csv
import json
from pathlib import Path
from typing import TextIO

import click

from relay.cli.common import config_option, jsonable, load, run, with_db
from relay.policy.consent_records import COLUMNS, Record, parse_record
from relay.queue.consent import BATCH, ConsentStore
from relay.queue.database import Pool


@click.group()
def consent() -> None:
    """P-CONSENT-RECORD: import and show consent records."""


@consent.command("import")
@config_option
@click.argument("csv_file", type=click.File("r", encoding="utf-8"))
@click.option("--tenant", required=True)
def consent_import(config_path: Path, csv_file: TextIO, tenant: str) -> None:
    """Import consent records from CSV_FILE for TENANT.

    \b
    The first row names the columns (any order, more are ignored):
      address       the recipient's email address
      consented_at  when, ISO 8601 (2026-03-01T09:30:00+01:00; no zone: UTC)
      source        from where: the IP address or another identifier
      form_version  which form or page version the recipient saw
      consent_text  the consent text shown
      method        web-form, double-opt-in, paper or verbal
    Rows that cannot serve as proof are refused with their line number and reason."""
    config = load(config_path)
    reader = csv.DictReader(csv_file)
    if not reader.fieldnames or set(COLUMNS) - set(reader.fieldnames):
        raise click.ClickException(f"the header row must name {', '.join(COLUMNS)}")
    rows = list(reader)
    records: list[Record] = []
    refused: list[str] = []
    for number, row in enumerate(rows, start=2):
        try:
            records.append(parse_record(row))
        except ValueError as exc:
            refused.append(f"line {number}: {exc}")

    async def store(pool: Pool) -> None:
        with click.progressbar(length=len(records), label="storing", file=None) as bar:
            for start in range(0, len(records), BATCH):
                batch = records[start : start + BATCH]
                await ConsentStore(pool).store(tenant, batch)
                bar.update(len(batch))

    if records:
        run(with_db(config, store))
    click.echo(f"stored {len(records)} consent records for {tenant}, refused {len(refused)}")
    for line in refused:
        click.echo(f"refused {line}", err=True)


@consent.command("show")
@config_option
@click.argument("address")
@click.option("--tenant", required=True)
@click.option("--json", "as_json", is_flag=True)
def consent_show(config_path: Path, address: str, tenant: str, as_json: bool) -> None:
    """Show the consent record of ADDRESS for TENANT."""
    config = load(config_path)
    record = run(with_db(config, lambda pool: ConsentStore(pool).show(tenant, address)))
    if record is None:
        raise click.ClickException(f"no consent record of {address} for {tenant}")
    if as_json:
        click.echo(json.dumps(jsonable(record), indent=2))
        return
    for key, value in record.items():
        click.echo(f"{key:13} {value}")
