"""Moving mail in and out of an account (issue 15): ``mailfleet import``
reads mbox files and Maildirs as mail clients write them (``sources``) and
stores them through the same ingestion as delivered mail, without the
filters (``service.ImportService``); ``mailfleet export`` writes every folder
back as an mbox file (``service.ExportService``). The formats themselves are
pure code in ``mailfleet.proto.mailfiles``. Decision 0027."""
