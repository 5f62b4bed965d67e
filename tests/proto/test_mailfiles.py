"""The mailbox file formats (proto/mailfiles.py), checked against Python's
``mailbox`` module where it writes them and against their specifications."""

from __future__ import annotations

import mailbox
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from mailfleet.proto.mailfiles import (
    decode_imap_utf7,
    file_name_for,
    folder_for_file,
    from_line_time,
    gmail_folder,
    maildir_state,
    mbox_quote,
    mbox_state,
    read_mbox,
    role_for,
    strip_state,
)

lines = st.lists(
    st.sampled_from(["From x", ">From y", ">>From z", "text", "", "From", " From a"]),
    max_size=12,
)


@given(lines)
def test_mboxrd_quoting_is_undone_by_reading(body: list[str]) -> None:
    message = ("Subject: s\n\n" + "\n".join(body) + "\n").encode()
    data = b"From a@b Mon Jan  1 00:00:00 2001\n" + mbox_quote(message) + b"\n"
    data += b"From c@d Mon Jan  1 00:00:00 2001\n" + mbox_quote(b"Subject: t\n\nx\n")
    entries = list(read_mbox(data.splitlines(keepends=True)))
    assert [e.message for e in entries] == [message, b"Subject: t\n\nx\n"]


def test_reads_what_pythons_mailbox_writes(tmp_path: Path) -> None:
    box = mailbox.mbox(tmp_path / "box")
    box.add(b"Subject: one\n\nFrom the start\nend\n")
    box.add(b"Subject: two\n\nsecond\n")
    box.close()
    with (tmp_path / "box").open("rb") as f:
        entries = list(read_mbox(f))
    assert [e.message for e in entries] == [
        b"Subject: one\n\nFrom the start\nend\n",
        b"Subject: two\n\nsecond\n",
    ]


def test_from_line_dates() -> None:
    assert from_line_time(b"From a@b Sat Jan  3 01:05:34 1996") == 820631134000
    # Gmail Takeout writes a zone before the year.
    assert from_line_time(b"From 1@xxx Wed Jul 19 16:10:04 +0200 2017") == 1500473404000
    assert from_line_time(b"From - Mon Feb 30 00:00:00 2001") is None
    assert from_line_time(b"From MAILER-DAEMON") is None


def test_state_headers_are_taken_off_and_read() -> None:
    raw = (
        b"Subject: s\r\nStatus: RO\r\nX-Status: F\r\nX-Mozilla-Status: 0001\r\n\r\nStatus: body\r\n"
    )
    clean, state = strip_state(raw)
    assert clean == b"Subject: s\r\n\r\nStatus: body\r\n"
    flags = mbox_state(state)
    assert (flags.seen, flags.flagged, flags.deleted) == (True, True, False)
    assert mbox_state({"x-mozilla-status": "0008"}).deleted
    assert not mbox_state({"x-gmail-labels": "Inbox,Unread"}).seen
    assert mbox_state({"x-gmail-labels": "Inbox,Starred"}).flagged


def test_maildir_flags_and_folder_names() -> None:
    assert maildir_state("1.2.host:2,FS").seen
    assert maildir_state("1.2.host:2,FS").flagged
    assert not maildir_state("1.2.host").seen
    assert maildir_state("1.2.host!2,T").deleted
    assert decode_imap_utf7("Projets &AOk-t&AOk-") == "Projets été"
    assert decode_imap_utf7("A &- B") == "A & B"
    assert decode_imap_utf7("&ZeVnLIqe-") == "日本語"
    assert decode_imap_utf7("broken &&&") == "broken &&&"


def test_special_folders_and_gmail_labels() -> None:
    assert role_for("Sent Items") == "sent"
    assert role_for("[Gmail]/Spam") == "junk"
    assert role_for("INBOX") == "inbox"
    assert role_for("Work") is None
    assert gmail_folder('Opened,"Projects, 2020",Category Updates') == "Projects, 2020"
    assert gmail_folder("Important,Opened") == "Archive"
    assert gmail_folder("Sent,Inbox") == "Inbox"


@given(st.text(max_size=40))
def test_folder_names_survive_as_file_names(name: str) -> None:
    file_name = file_name_for(name)
    assert "/" not in file_name and "\x00" not in file_name
    assert not file_name.startswith(".")
    assert folder_for_file(file_name) == (name or "\x00")
