"""Personal data let go when it no longer serves (P-RETENTION) and the signed one-click
unsubscribe links through which recipients withdraw (P-UNSUB)."""
