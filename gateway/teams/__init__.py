"""Teams: managed keys, rate limits, budgets and the usage ledger, over the state store."""
