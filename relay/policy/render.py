"""What a recipient sees of a message: its inline text parts, HTML rendered to text.

HTML goes through lexbor (selectolax), an HTML5 parser in C: entities decoded, scripts,
styles and the head dropped, and a line break put where a block element (paragraph, table
cell, list item, `<br>`...) starts, so that words of neighbouring cells stay apart as a
reader sees them. Image alt text counts (it is what shows when images are blocked). Link
targets are collected for the checks that need them (P-UNSUB, P-NO-SERVICE-CONTACT,
P-IDENTITY's `mailto:`). lexbor renders a newsletter many times faster than the standard
library's HTMLParser (see bench/README.md).
"""

import re
from dataclasses import dataclass

from selectolax.lexbor import LexborHTMLParser

from relay.policy.mime import TextPart

_BLOCK = re.compile(
    r"<(?=/?(?:p|div|br|hr|tr|td|th|li|dt|dd|h[1-6]|table|tbody|thead|tfoot|ul|ol|dl"
    r"|section|article|header|footer|nav|aside|main|blockquote|pre|address|center|figure"
    r"|figcaption|caption|form|fieldset|legend|option)\b)",
    re.IGNORECASE,
)
_URL = re.compile(r"(?:https?://|mailto:)[^\s<>\"')\]]+", re.IGNORECASE)


@dataclass(frozen=True)
class Rendered:
    text: str
    """All inline text, HTML rendered (whitespace as it comes: the checks split words)."""
    links: tuple[str, ...]
    """href targets of HTML parts and URLs written in text parts, as written."""


def _html(source: str) -> tuple[str, list[str]]:
    tree = LexborHTMLParser(_BLOCK.sub("\n<", source))
    for node in tree.css("script, style, head, template, noscript"):
        node.decompose()
    links = [a.attributes.get("href") or "" for a in tree.css("a[href]")]
    for image in tree.css("img[alt]"):
        image.replace_with(f" {image.attributes.get('alt') or ''} ")
    root = tree.body or tree.root
    return (root.text(deep=True, separator="") if root is not None else ""), links


def render(parts: list[TextPart]) -> Rendered:
    texts: list[str] = []
    links: list[str] = []
    for part in parts:
        if part.subtype == "html":
            text, found = _html(part.text)
            texts.append(text)
            links += [link.strip() for link in found if link.strip()]
        else:
            texts.append(part.text)
            if "://" in part.text or "mailto:" in part.text:
                links += _URL.findall(part.text)
    return Rendered("\n".join(texts), tuple(links))
