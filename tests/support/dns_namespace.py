"""Run a command whose resolver can only be pointed at port 53 against our DNS server.

Peers such as OpenDKIM's `opendkim-testmsg` use the system resolver (/etc/resolv.conf,
port 53) with no option to name another server. Under `unshare --mount --net` (root), this
runs a private loopback with the test DNS server on 127.0.0.1:53 and a resolv.conf bound
over the real one, so the command asks our server and nothing leaves the namespace.

    unshare --mount --net python -m tests.support.dns_namespace RECORDS.json CMD [ARG...]

RECORDS.json maps owner names to lists of [rdtype, ttl, text], as `DnsServer` takes them.
The command's standard input, output and exit code pass through.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support.dns_server import DnsServer


def main() -> int:
    records_path, *command = sys.argv[1:]
    records = {
        k: [tuple(x) for x in v] for k, v in json.loads(Path(records_path).read_text()).items()
    }
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    with tempfile.NamedTemporaryFile("w", suffix=".resolv", delete=False) as resolv:
        resolv.write("nameserver 127.0.0.1\noptions timeout:2 attempts:1\n")
    subprocess.run(["mount", "--bind", resolv.name, "/etc/resolv.conf"], check=True)
    server = DnsServer(records, port=53)  # type: ignore[arg-type]
    try:
        return subprocess.run(command, check=False).returncode
    finally:
        server.stop()
        Path(resolv.name).unlink()


if __name__ == "__main__":
    sys.exit(main())
