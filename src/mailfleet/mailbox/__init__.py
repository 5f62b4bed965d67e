"""Reading and organizing a mailbox: folders, listings, messages, flags, moves,
Trash semantics. Every call is scoped by the account it is given."""
