"""Getting mail to mailboxes: composing and sending (the send flow), local
delivery to hosted accounts, and (later) outgoing SMTP delivery, retries and
bounces."""
