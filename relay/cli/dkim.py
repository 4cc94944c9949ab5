"""`relay dkim keygen|rotate|ls`: DKIM keys and their DNS records."""

import sys
from pathlib import Path

import click

from relay.cli.common import config_option, load, run
from relay.config.schema import Config
from relay.dkim.keys import DomainKeys, unsigned_domains


@click.group()
def dkim() -> None:
    """DKIM keys: generate, publish, rotate."""


def _domain_keys(config: Config, domain: str) -> DomainKeys:
    from relay.mail.address import to_a_label

    return DomainKeys(Path(config.relay.data_dir) / "dkim", to_a_label(domain))


def unsigned(config: Config) -> list[str]:
    """`TENANT: DOMAIN` for every tenant domain that no active key signs for (P-DKIM)."""
    root = Path(config.relay.data_dir) / "dkim"
    return [f"{t.name}: {d}" for t in config.tenants for d in unsigned_domains(root, t.domains)]


def unsigned_consequence(config: Config) -> str:
    """What happens to those domains' mail under this configuration."""
    if config.dkim.generate_missing:
        return "a key is made and activated when the relay starts ([dkim] generate_missing)"
    if config.dkim.allow_unsigned:
        return "their mail leaves unsigned ([dkim] allow_unsigned)"
    return (
        "their mail is refused with 550 5.7.1 [P-DKIM] until a key is active "
        "(relay dkim keygen DOMAIN, publish the record, relay dkim rotate DOMAIN)"
    )


def _txt_record(domain: str, selector: str, record: str) -> str:
    """Zone-file form, split into strings of at most 255 octets (RFC 1035 3.3.14)."""
    chunks = " ".join(f'"{record[i : i + 255]}"' for i in range(0, len(record), 255))
    return f"{selector}._domainkey.{domain}. IN TXT ( {chunks} )"


@dkim.command("keygen")
@config_option
@click.argument("domain")
@click.option("--selector", help="Default: ALGORITHM + year and month, e.g. rsa202611.")
@click.option(
    "--algorithm", type=click.Choice(["rsa", "ed25519"]), default="rsa", show_default=True
)
def dkim_keygen(config_path: Path, domain: str, selector: str | None, algorithm: str) -> None:
    """Make the domain's next key (mode 0600) and print the TXT record to publish."""
    from relay.dkim.keys import dns_record

    keys = _domain_keys(load(config_path), domain)
    try:
        selector, key = keys.add_next(algorithm, selector)  # type: ignore[arg-type]
    except (FileExistsError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {keys.key_path(selector)}; publish this record, then run:")
    click.echo(f"  relay dkim rotate {keys.domain}\n")
    click.echo(_txt_record(keys.domain, selector, dns_record(key)))


@dkim.command("rotate")
@config_option
@click.argument("domain")
def dkim_rotate(config_path: Path, domain: str) -> None:
    """Promote the next key(s) to active once their DNS records are published."""
    from relay.dkim.keys import dns_record
    from relay.dkim.publish import is_published

    config = load(config_path)
    keys = _domain_keys(config, domain)
    pending = [(alg, st.next) for alg, st in keys.state.items() if st.next]
    if not pending:
        raise click.ClickException(f"{keys.domain} has no next key: run relay dkim keygen first")
    failed = False
    for algorithm, selector in pending:
        assert selector is not None
        key = keys.load_key(selector)
        if not run(is_published(keys.domain, selector, key, config.delivery.nameservers)):
            failed = True
            click.echo(f"{algorithm}: {selector} is not published yet; publish:", err=True)
            click.echo("  " + _txt_record(keys.domain, selector, dns_record(key)), err=True)
            continue
        new, old = keys.promote(algorithm)  # type: ignore[arg-type]
        click.echo(f"{algorithm}: {new} now signs for {keys.domain}")
        if old:
            click.echo(
                f"{algorithm}: {old} retired; keep its DNS record published for at least "
                "a week so mail signed before now still verifies"
            )
    if failed:
        sys.exit(1)


@dkim.command("ls")
@config_option
def dkim_ls(config_path: Path) -> None:
    """List every domain's active, next and retired selectors."""

    root = Path(load(config_path).relay.data_dir) / "dkim"
    for directory in sorted(root.iterdir()) if root.is_dir() else []:
        for algorithm, st in DomainKeys(root, directory.name).state.items():
            retired = ", ".join(str(r["selector"]) for r in st.retired) or "-"
            click.echo(
                f"{directory.name:30} {algorithm:8} active={st.active or '-'} "
                f"next={st.next or '-'} retired={retired}"
            )
