"""Multi-tenant outbound SMTP relay."""

import warnings

from cryptography.utils import CryptographyDeprecationWarning

# cryptography 51 deprecates DSA, and dnspython (2.9.2 and earlier) names `dsa.DSAPublicKey`
# in `dns/dnssecalgs/dsa.py` at import; checkdmarc imports `dns.dnssec`, which loads it. The
# relay never touches DSA. Only that category from only that module is silenced, so every
# other warning (ours above all) still shows; pyproject.toml does the same for pytest.
warnings.filterwarnings(
    "ignore", category=CryptographyDeprecationWarning, module=r"dns\.dnssecalgs\.dsa\Z"
)
