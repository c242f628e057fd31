"""Regular expressions from administrators run with a time limit (issue 26): a queue filter
with a catastrophic pattern is refused by name, through the CLI and the panel, on a real
queued message whose recipient is a long run of one letter."""
from __future__ import annotations

import urllib.parse

import pytest
from click.testing import CliRunner

from rupost.cli import main as rupost
from rupost.errors import ValidationError
from rupost.services.queue_messages import QueueFilter
from rupost.templating.document import check_parameter
from rupost.user_regex import MAX_PATTERN, UserPattern

from .test_ops_areas import queue_one, text

CATASTROPHIC = "(a+)+$"  # exponential on 'aaa...a' followed by anything else, in Python's re


@pytest.fixture
def long_recipient(node, mailbox):
    """(sender, queue id) of a deferred message to a 1,500-letter local part."""
    sender, qid = queue_one(node, mailbox, local_part=f"{'a' * 1500}x", subject="a long recipient")
    yield sender, qid
    node.app.mailqueues.act("delete", ids=[qid])


# Each match stops after user_regex.MATCH_TIMEOUT (0.5 s): the "takes too long" answer is only
# given when that limit cut a match short (the unbounded match would run for longer than the
# age of the universe). No wall-time bound is asserted: a loaded machine would fail it.
def test_a_catastrophic_queue_filter_is_stopped_and_named_by_the_cli(node, long_recipient):
    sender, qid = long_recipient
    args = ["--root", str(node.root), "mailqueues", "list", "--match", f"sender={sender}",
            "--match", f"recipient~{CATASTROPHIC}"]
    result = CliRunner().invoke(rupost, args)
    assert result.exit_code == 1 and CATASTROPHIC in result.output and "takes too long" in result.output
    sane = CliRunner().invoke(rupost, ["--root", str(node.root), "mailqueues", "list", "--match",
                                       f"sender={sender}", "--match", "recipient~^a+x"])
    assert sane.exit_code == 0 and qid in sane.output


def test_a_catastrophic_queue_filter_is_stopped_and_named_by_the_panel(superadmin, node, long_recipient):
    sender, qid = long_recipient
    q = urllib.parse.quote(f"sender={sender} recipient~{CATASTROPHIC}")
    page = text(superadmin.get(f"/mailqueues/?q={q}"))
    assert CATASTROPHIC in page and "takes too long" in page and qid not in page
    q = urllib.parse.quote(f"sender={sender} recipient~^a+x")
    assert qid in text(superadmin.get(f"/mailqueues/?q={q}"))


def test_bad_and_overlong_patterns_are_refused_with_their_name():
    with pytest.raises(ValidationError, match="bad regular expression"):
        QueueFilter.parse(["sender~(unclosed"])
    with pytest.raises(ValidationError, match="too long"):
        UserPattern("a" * (MAX_PATTERN + 1))


def test_a_template_parameter_pattern_runs_with_a_time_limit():
    spec = {"type": "string", "pattern": "(a|aa)+$"}
    with pytest.raises(ValidationError, match=r"parameter pattern '\(a\|aa\)\+\$' takes too long"):
        check_parameter(spec, "a" * 60 + "!")
    assert check_parameter(spec, "aaa") is None
