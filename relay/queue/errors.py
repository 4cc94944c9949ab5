"""What asyncpg raises when the database is down, restarting or out of reach.

Every caller that can wait out an outage (answer 451, retry the round, keep the lease)
catches these, and nothing else, so a bug still shows as one. The list is longer than
PostgreSQL's own errors: a server stopping mid-run was seen to surface as each of them.
"""

import asyncpg

DATABASE_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.PostgresError,  # the server's: "the database system is shutting down", ...
    asyncpg.InterfaceError,  # a connection closed in the middle of an operation
    # a pooled connection used again while it still consumes the error that ended it:
    # "cannot switch to state 12; another operation (2) is in progress"
    asyncpg.InternalClientError,
    OSError,  # the socket refused, or gone
    TimeoutError,
)
