"""What the tests share; no test module imports another test module, only these.

Real peers on loopback, nothing mocked:

- `peers`: the relay as a child process (`python -m relay serve` with a generated
  relay.toml: `RelayConfig` builds it as a dict, which tests vary as data through
  `overrides`), an SMTP sink that captures deliveries, `relay` commands run against a test
  relay's configuration, queries on its database, free ports, waiting.
- `smtp_client`: smtplib sessions to the submission listeners, a test message, and `Raw`,
  a plain-socket SMTP dialogue for what smtplib would rewrite.
- `smtp_dialogue`: byte-exact dialogues upgraded to TLS after STARTTLS, with AUTH PLAIN.
- `dns_server`: an authoritative DNS server over UDP and TCP serving the records it is given.
- `dns_namespace`: runs a command whose resolver only asks port 53 against that server,
  inside `unshare --mount --net`.
- `rdap_server`: an RDAP bootstrap, registry and registrar answering from tests/samples/rdap.

Shared test material:

- `messages`: a newsletter that meets every bulk rule, its bulk tenant, and the standard
  library's reading of a message's text parts.
- `dkim`: messages that are hard to canonicalise, TXT record text, and dkimpy's verifier
  asking the loopback DNS server.
- `feedback`: DSNs and ARF complaints as a provider sends them, and the SMTP session that
  hands one to the feedback listener.
- `ops`: the Prometheus alerts and the Grafana dashboard, and the PromQL read out of them.
- `mutate`: seeded byte-level damage for the parsers' robustness tests.
"""
