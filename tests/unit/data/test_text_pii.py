"""Unicode normalisation, tokenisation and PII scrubbing on worked examples."""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator.config.data_prep import PIIConfig
from orchestrator.data.pii import scrub_pii
from orchestrator.data.text import count_sentences, dedup_key_text, normalize_text, shingle_words, words


def test_normalize_nfc_controls_whitespace():
    decomposed = "Cafe\u0301"  # e + combining acute
    assert normalize_text(decomposed) == "Caf\u00e9"
    assert normalize_text("a\u0000b\u200bc\ufeffd\u0007") == "abcd"
    assert normalize_text("  two   spaces\tand tab  \r\nnext\u00a0line \n\n\n\n\nlast  ") == \
        "two spaces and tab\nnext line\n\nlast"
    assert normalize_text("\ufb01", form="NFKC") == "fi" and normalize_text("\ufb01") == "\ufb01"
    assert normalize_text("a  b", collapse_whitespace=False) == "a  b"


def test_words_and_keys():
    assert words("Hello, world... it's a well-known fact!") == ["Hello", "world", "it's", "a", "well-known", "fact"]
    assert shingle_words("The CAT, the cat.") == ["the", "cat", "the", "cat"]
    assert dedup_key_text("The  Cat\n\nsat ") == dedup_key_text("the cat sat")
    assert count_sentences("One. Two! Three? Four") == 3 and count_sentences("") == 0
    assert count_sentences("no end mark") == 1


CFG = PIIConfig()


@pytest.mark.parametrize("text,expected", [
    ("Mail jane.doe+news@mail.example.co.uk today.", "Mail <EMAIL> today."),
    ("Server 192.168.1.20 and 10.0.0.1.", "Server <IP_ADDRESS> and <IP_ADDRESS>."),
    ("IPv6 2001:0db8:85a3:0000:0000:8a2e:0370:7334 here", "IPv6 <IP_ADDRESS> here"),
    ("Call +1 (555) 123-4567 now", "Call <PHONE> now"),
    ("Call 555-123-4567 or 555.123.4567", "Call <PHONE> or <PHONE>"),
    ("Ring +44 20 7946 0958 please", "Ring <PHONE> please"),
])
def test_pii_replaced(text, expected):
    assert scrub_pii(text, CFG)[0] == expected


@pytest.mark.parametrize("text", [
    "Version 1.2.3 was released on 2024-01-15.",
    "The address 999.1.1.1 is not an IP.",
    "He scored 12 points in 3 games, 45 minutes each.",
    "Email me at name at example dot com.",
    "Order 1234567 shipped.",
])
def test_pii_leaves_lookalikes(text):
    new, counts = scrub_pii(text, CFG)
    assert new == text and counts.total == 0


def test_pii_counts_and_switches():
    text = "a@b.org, 8.8.8.8, (555) 123-4567"
    new, counts = scrub_pii(text, CFG)
    assert (counts.emails, counts.ips, counts.phones) == (1, 1, 1)
    off = replace(CFG, emails=False, phone_numbers=False, ip_placeholder="[IP]")
    assert scrub_pii(text, off)[0] == "a@b.org, [IP], (555) 123-4567"
