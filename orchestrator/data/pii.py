"""PII scrubbing: e-mail addresses, IP addresses and phone numbers become placeholders.

Regex-based, like datatrove's PIIFormatter and BigScience's ROOTS scrubbing: high precision on the
common formats, no attempt at names or street addresses.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from orchestrator.config.data_prep import PIIConfig

EMAIL_RE = re.compile(r"\b[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}\b")
IPV4_RE = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?!\d|\.\d)")
IPV6_RE = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}(?![\w:])")
# +CC (area) ddd-dddd, (ddd) ddd-dddd, ddd-ddd-dddd, ddd.ddd.dddd: at least 7 digits with separators.
PHONE_RE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?|\d{2,4}[\s.-])\d{3,4}[\s.-]\d{3,4}(?![\w-])"
)


@dataclass(frozen=True)
class ScrubCounts:
    emails: int = 0
    ips: int = 0
    phones: int = 0

    @property
    def total(self) -> int:
        return self.emails + self.ips + self.phones


def _valid_ipv4(s: str) -> bool:
    try:
        ipaddress.IPv4Address(s)
        return True
    except ValueError:
        return False


def scrub_pii(text: str, cfg: PIIConfig) -> tuple[str, ScrubCounts]:
    """Replace the enabled kinds of PII in ``text``; returns the new text and what was replaced.

    E-mails go first (an address can contain digit runs), then IPs (a dotted quad would otherwise
    look like a phone number), then phone numbers.
    """
    emails = ips = phones = 0
    if cfg.emails:
        text, emails = EMAIL_RE.subn(cfg.email_placeholder, text)
    if cfg.ip_addresses:
        def _ip(m: re.Match[str]) -> str:
            nonlocal ips
            if _valid_ipv4(m.group(0)):
                ips += 1
                return cfg.ip_placeholder
            return m.group(0)

        text = IPV4_RE.sub(_ip, text)
        text, n6 = IPV6_RE.subn(cfg.ip_placeholder, text)
        ips += n6
    if cfg.phone_numbers:
        text, phones = PHONE_RE.subn(cfg.phone_placeholder, text)
    return text, ScrubCounts(emails, ips, phones)
