"""Which ISO 4217 currency codes a text supports: the codes it writes, and the symbols, local
abbreviations and words that name a currency.

    text_currencies("TOTAL RM 42.90")         # ["MYR"]
    text_currencies("Total $8.80 ... in SGD")  # the dollars "$" may mean, SGD among them
    text_currencies("TOTAL 42.90")            # []: the text states no currency

A symbol that several currencies write (`$`, `¥`, `kr`, `Rs`) supports each of them; the
schema's own `enum` narrows that down. Letters that are also ordinary words or abbreviations
(`RM` for room, `Ft` for feet, `PEN`, `TOP`) count only where they stand as a currency: beside
an amount (`RM 42.90`, `RM42.90`, `RM` on the line above `42.90`, `12,50 kr`) or as a column's
unit in brackets (`Amount(RM)`).
"""

from __future__ import annotations

import re

_words = str.split
ISO_CODES = frozenset(
    _words(
        """AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN
    BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP
    GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS
    KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR
    MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF
    SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD
    TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XOF XPF YER ZAR ZMW ZWL"""
    )
)
# Codes that are also words or common abbreviations on documents (a pen, a top, petrol RON95,
# SHP for shipping, BHD for Berhad in Malaysian company names): they count only beside an
# amount, like the letter abbreviations.
WORDLIKE_CODES = frozenset(
    _words("ALL AMD BAM BHD BOB BTN CUP ERN GEL MAD MOP NAD PEN RON SHP SOS TOP TRY")
)

DOLLARS = ("USD", "AUD", "CAD", "NZD", "SGD", "HKD", "TWD", "MXN", "BND", "JMD", "TTD", "FJD")
RUPEES = ("INR", "PKR", "LKR", "NPR")
# Dollar signs with a country prefix name one currency.
PREFIXED_DOLLARS = {
    "US$": ("USD",), "S$": ("SGD",), "SG$": ("SGD",), "A$": ("AUD",), "AU$": ("AUD",),
    "C$": ("CAD",), "CA$": ("CAD",), "CAN$": ("CAD",), "NZ$": ("NZD",), "HK$": ("HKD",),
    "NT$": ("TWD",), "R$": ("BRL",), "MX$": ("MXN",), "RD$": ("DOP",),
}  # fmt: skip
SYMBOLS = {
    "$": DOLLARS, "€": ("EUR",), "£": ("GBP",), "¥": ("JPY", "CNY"), "￥": ("JPY", "CNY"),
    "円": ("JPY",), "元": ("CNY",), "₹": ("INR",), "₨": RUPEES, "₩": ("KRW",), "฿": ("THB",),
    "₱": ("PHP",), "₫": ("VND",), "₺": ("TRY",), "₽": ("RUB",), "₪": ("ILS",), "₦": ("NGN",),
    "₴": ("UAH",), "₸": ("KZT",), "zł": ("PLN",), "Kč": ("CZK",),
}  # fmt: skip
# Local abbreviations written in letters: a currency only beside an amount or in brackets.
ABBREVIATIONS = {
    "RM": ("MYR",), "Rs": RUPEES, "RS": RUPEES, "Rp": ("IDR",), "RP": ("IDR",),
    "kr": ("SEK", "NOK", "DKK", "ISK"), "Kr": ("SEK", "NOK", "DKK", "ISK"),
    "Fr": ("CHF",), "SFr": ("CHF",), "CHF": ("CHF",), "Ft": ("HUF",), "Dhs": ("AED",),
    "Dh": ("AED",), "RMB": ("CNY",),
}  # fmt: skip
WORDS = {
    "euro": ("EUR",), "euros": ("EUR",), "dollar": DOLLARS, "dollars": DOLLARS,
    "ringgit": ("MYR",), "rupee": RUPEES, "rupees": RUPEES, "rupiah": ("IDR",), "yen": ("JPY",),
    "yuan": ("CNY",), "renminbi": ("CNY",), "sterling": ("GBP",), "baht": ("THB",),
    "franc": ("CHF",), "francs": ("CHF",), "krona": ("SEK",), "kronor": ("SEK",),
    "krone": ("NOK", "DKK"), "kroner": ("NOK", "DKK"), "zloty": ("PLN",), "dirham": ("AED", "MAD"),
}  # fmt: skip


def _alternation(names) -> str:
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


# An amount: digits with their separators, not the start of a size or a code ("0.5MM", "3IN1").
_AMOUNT = r"[-+]?\d+(?:[.,' ]\d+)*(?![\w%-]|[.,]\d)"
_PREFIXED = re.compile(rf"(?<![A-Za-z])(?:{_alternation(PREFIXED_DOLLARS)})")
_SYMBOL = re.compile(_alternation(SYMBOLS))
_LETTERS = {**ABBREVIATIONS, **{code: (code,) for code in WORDLIKE_CODES}}
# An abbreviation may stand on the line above its amount (OCR writes a box a line) or after it;
# a word-like code only before it on the same line (a registration number under "SDN BHD" is no
# amount in dinars, "2 PEN MARKER" no amount in soles).
_BESIDE_AMOUNT = re.compile(
    rf"(?<![A-Za-z])(?:(?P<abbr>{_alternation(ABBREVIATIONS)})\.?\s?"
    rf"|(?P<code>{_alternation(WORDLIKE_CODES)}) ?)(?={_AMOUNT})"
    rf"|(?<=\d) ?(?P<after>{_alternation(ABBREVIATIONS)})\.?(?![A-Za-z])"
    rf"|\((?P<unit>{_alternation(_LETTERS)})\.?\)"
)
_CODE = re.compile(r"(?<![A-Za-z])[A-Z]{3}(?![A-Za-z])")
_WORD = re.compile(rf"\b(?:{_alternation(WORDS)})\b", re.IGNORECASE)
# A currency written straight before its amount ("RM42.90", "USD1,200"): where a space goes
# so the amount reads as a number of its own.
_GLUED = re.compile(rf"(?<![A-Za-z])({_alternation(set(ABBREVIATIONS) | ISO_CODES)})(\.?)(?=\d)")


def text_currencies(text: str) -> list[str]:
    """The ISO codes `text` supports (module docstring), first written first."""
    found: list[tuple[int, tuple[str, ...]]] = []
    masked = list(text)
    for m in _PREFIXED.finditer(text):
        found.append((m.start(), PREFIXED_DOLLARS[m.group()]))
        masked[m.start() : m.end()] = " " * (m.end() - m.start())
    rest = "".join(masked)
    found += [(m.start(), SYMBOLS[m.group()]) for m in _SYMBOL.finditer(rest)]
    for m in _BESIDE_AMOUNT.finditer(rest):
        name = m.group("abbr") or m.group("code") or m.group("after") or m.group("unit")
        found.append((m.start(), _LETTERS[name]))
    found += [
        (m.start(), (m.group(),))
        for m in _CODE.finditer(rest)
        if m.group() in ISO_CODES and m.group() not in WORDLIKE_CODES
    ]
    found += [(m.start(), WORDS[m.group().lower()]) for m in _WORD.finditer(rest)]
    codes: dict[str, None] = {}
    for _, named in sorted(found, key=lambda f: f[0]):
        codes.update(dict.fromkeys(named))
    return list(codes)


def unglue_currency(text: str) -> str:
    """`text` with a space between a currency and an amount written against it ("RM42.90" ->
    "RM 42.90", "Rs.28.00" -> "Rs. 28.00"), so number readers see the amount."""
    return _GLUED.sub(r"\1\2 ", text)
