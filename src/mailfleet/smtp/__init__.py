"""SMTP servers (RFC 5321): the MX (``smtp-in``) and, later, submission. The
protocol comes from aiosmtpd; this package holds the policy hooks and reply
codes, and hands accepted mail to the delivery services."""
