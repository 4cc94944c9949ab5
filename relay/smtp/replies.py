"""Every reply the submission listener sends, with its RFC 3463 enhanced status code.

One module of constants, as aiosmtpd keeps its `S250_OK`: the tests compare against these,
and a reply never leaks internals (aiosmtpd's default `500 Error: (Class) msg` is replaced by
`INTERNAL_ERROR`, a temporary failure, so the client keeps the message and retries).
"""

import re

BANNER_IDENT = "ESMTP relay"

OK = "250 2.0.0 OK"
SENDER_OK = "250 2.1.0 Sender OK"
RECIPIENT_OK = "250 2.1.5 Recipient OK"
QUEUED = "250 2.0.0 OK queued as {queue_id}"
START_DATA = "354 End data with <CR><LF>.<CR><LF>"

# RFC 5321 4.2.3 / RFC 3463: 4xx, try again later.
INTERNAL_ERROR = "451 4.3.0 Internal error, please try again later"
QUEUE_UNAVAILABLE = "451 4.3.0 Queue temporarily unavailable, please try again later"
TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections, try again later"
TOO_MANY_CONNECTIONS_FROM_CLIENT = "421 4.7.0 Too many connections from your address"
TOO_MANY_ERRORS = "421 4.7.0 Too many errors, closing connection"
TOO_MANY_UNKNOWN_COMMANDS = "421 4.7.0 Too many unrecognized commands, closing connection"
DATA_TIMEOUT = "421 4.4.2 Timeout while receiving data, closing connection"
TOO_MANY_RECIPIENTS = (
    "452 4.5.3 [P-SIZE] Too many recipients for one message, send the rest in another"
)
RATE_LIMITED = "450 4.7.1 Tenant {tenant} is over its limit of {limit} messages per minute"
AUTH_LOCKED = "454 4.7.0 Too many failed authentication attempts, try again later"

# RFC 4954 6 and RFC 5321: permanent refusals.
AUTH_REQUIRED = "530 5.7.0 Authentication required"
AUTH_INVALID = "535 5.7.8 Authentication credentials invalid"
AUTH_SUCCESS = "235 2.7.0 Authentication successful"
BAD_BASE64 = "501 5.5.2 Cannot decode base64"
BAD_AUTH_DATA = "501 5.5.2 Malformed authentication data"
BAD_SEQUENCE_NEED_MAIL = "503 5.5.1 Need MAIL command first"
BAD_SEQUENCE_NEED_RCPT = "503 5.5.1 Need RCPT command first"
BAD_SEQUENCE_NESTED_MAIL = "503 5.5.1 Sender already given"
TLS_ALREADY_ACTIVE = "503 5.5.1 TLS already active"
MAIL_SYNTAX = "501 5.5.4 Syntax: MAIL FROM:<address> [SIZE=n] [BODY=8BITMIME] [SMTPUTF8]"
RCPT_SYNTAX = "501 5.5.4 Syntax: RCPT TO:<address>"
DATA_SYNTAX = "501 5.5.4 Syntax: DATA"
BAD_SENDER = "501 5.1.7 Bad sender address syntax"
BAD_RECIPIENT = "501 5.1.3 Bad recipient address syntax"
UNKNOWN_PARAMETER = "555 5.5.4 Parameter {param} not recognized"
BAD_BODY = "501 5.5.4 BODY must be 7BIT or 8BITMIME"
DATA_BUDGET_FULL = (
    "452 4.3.1 Insufficient system storage: too much mail in transit, try again later"
)
MESSAGE_TOO_BIG = "552 5.3.4 [P-SIZE] Message size exceeds the limit of {limit} bytes"
NUL_IN_DATA = "554 5.6.0 NUL characters are not allowed in message data"
BARE_NEWLINE_IN_DATA = "554 5.5.2 Bare CR or LF is not allowed in message data (RFC 5321 2.3.8)"

_HAS_CODE = re.compile(r"^[245]\d\d[ -][245]\.\d{1,3}\.\d{1,3}( |$)")
_DEFAULT_CODES = {
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "421": "4.3.0",
}


def with_enhanced_code(reply: str) -> str:
    """Add an enhanced status code to a reply from aiosmtpd's core that lacks one.

    Once ENHANCEDSTATUSCODES is advertised, RFC 2034 section 3 asks for a code on every
    2xx/4xx/5xx reply except the greeting and the HELO/EHLO responses (which the session
    sends without passing them here); the 220 to STARTTLS gets one like any other reply.
    """
    if len(reply) < 4 or reply[0] not in "245" or reply[3] not in " -" or _HAS_CODE.match(reply):
        return reply
    code = reply[:3]
    enhanced = _DEFAULT_CODES.get(code, f"{code[0]}.0.0")
    text = reply[4:].removeprefix("Error: ")
    return f"{code}{reply[3]}{enhanced} {text}"
