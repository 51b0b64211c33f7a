"""Captioning metrics as the COCO caption evaluation computes them, without its Java tokenizer.

Published COCO numbers (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, SPICE) come from pycocoevalcap, which
first runs Stanford CoreNLP 3.4.1's ``PTBTokenizer`` (Java, ``-preserveLines -lowerCase``) over
every caption and drops punctuation tokens. :func:`ptb_tokenize_lines` reproduces that step in
Python, so BLEU, ROUGE-L and CIDEr-D (pycocoevalcap's scorers, called as shipped) need no Java.
METEOR and SPICE are Java programs: computed only where ``java`` is on PATH (SPICE also only where
its CoreNLP jars are already on disk: pycocoevalcap would download them), otherwise absent with
the reason, never 0.

The tokenizer is a longest-match scanner over the Java lexer's token classes (words, clitics such
as ``'s`` and ``n't``, numbers, abbreviations, quotes, brackets, dashes, smileys); the earlier
class wins a tie, as there. The Java tool reads all captions as one text, a caption a line, so a
caption's end can depend on the next line (``etc.`` before a capitalised line also yields ``.``):
:func:`ptb_tokenize_lines` keeps that context. One deliberate difference: ``\r``, U+2028 and the
other line separators inside a caption are read as spaces; the Java tool starts a new line there
and shifts every later caption onto its neighbour's key.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import unicodedata
from collections.abc import Hashable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path

from vislang.errors import first_line


def _classes() -> tuple[str, str]:
    """Regex class bodies of the BMP letters and upper-case letters (Java's Character.isLetter and
    isUpperCase, which the Java lexer's [:letter:] and [:uppercase:] are)."""
    found: dict[str, list[tuple[int, int]]] = {"L": [], "Lu": []}
    for code in range(0x10000):
        category = "" if 0xD800 <= code <= 0xDFFF else unicodedata.category(chr(code))
        for kind, ranges in found.items():
            if category.startswith(kind):
                if ranges and ranges[-1][1] == code - 1:
                    ranges[-1] = (ranges[-1][0], code)
                else:
                    ranges.append((code, code))
    return tuple(  # type: ignore[return-value]
        "".join(re.escape(chr(a)) + ("-" + re.escape(chr(b)) if b > a else "") for a, b in ranges)
        for ranges in found.values()
    )


def _words(spec: str, *more: str) -> str:
    """An alternation of the words in ``spec``, longest first (so the regex prefers the longest, as
    the Java lexer does); a word marked ``^`` has a case-sensitive first letter, the rest of every
    word matches in either case (the lexer is caseless except inside character classes)."""
    out = []
    for word in sorted(spec.split(), key=lambda w: -len(w.lstrip("^"))):
        if word.startswith("^"):
            out.append(re.escape(word[1]) + "(?i:" + re.escape(word[2:]) + ")" if len(word) > 2 else word[1])
        else:
            out.append("(?i:" + re.escape(word) + ")")
    return "(?:" + "|".join(out + list(more)) + ")"


def _quotes(text: str, left: bool) -> str:
    """PTB's LaTeX-style quotes: ` and `` open, ' and '' close (ASCII ones by their position)."""
    text = re.sub("&apos;|'", "`" if left else "'", text)
    text = re.sub('"|&quot;', "``" if left else "''", text)
    for chars, value in (
        ("\u0091\u2018\u201b\u2039", "`"),
        ("\u0092\u2019\u203a", "'"),
        ("\u0093\u201c\u00ab", "``"),
        ("\u0094\u201d\u00bb", "''"),
    ):
        text = re.sub(f"[{chars}]", value, text)
    return text


# fmt: off
# What pycocoevalcap removes after tokenising (its PUNCTUATIONS list). Brackets come out of the
# lower-cased tokenizer as -lrb- / -rrb-, which this upper-case list does not match: they stay.
DROPPED = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
                     "...", ";"])


_LETTERS, _UPPER = _classes()
LET = f"[{_LETTERS}]"
WL = f"[{_LETTERS}\u00ad\u0300-\u036f]"  # word characters: letters, soft hyphen, combining accents
AN = f"[{_LETTERS}0-9]"
SP = "[ \t\u00a0\u2000-\u200a\u3000]"
SPNL = "[ \t\u00a0\u2000-\u200a\u3000\n]"
APOS = "(?:['\u0092\u2019]|&apos;)"
APOSX = "(?:['`\u0092\u2019\u0091\u2018\u201b]|&apos;)"
REDAUX = f"{APOS}(?:[msdMSD]|(?i:re|ve|ll))"
NUM = r"(?:\d*(?:[.:,\u00ad\u066b\u066c]\d+)+|\d+)"
NAME = r"[A-Za-z][A-Za-z0-9_:.\-]*"
SGML = (  # a tag: <!...>, <?...>, </name>, or <name attribute="value" ...>, on one line
      rf"<(?:[!?][A-Za-z\-][^>\n]*|/{NAME}|{NAME}(?: +{NAME}(?: *= *(?:'[^']*'|\"[^\"]*\"|{NAME}))?)* */?) *>"
)
ACRO = (r"(?:[A-Za-z](?:\.[A-Za-z])*|(?i:canada|sino|korean|eu|japan|non)-(?i:u)\.(?i:s)"
        r"|(?i:u\.s\.-(?:u\.s\.s\.r|u\.k)))")
ABBREV1 = _words(  # abbreviations usually followed by lower case: a capital after one also ends a sentence
    "jan feb mar apr jun jul aug sep sept oct nov dec mon tue tues wed thu thurs fri ala ariz ^Az ^Ark calif colo"
    " conn ct dak ^Del fla ga ^Ill ind kan kans ky ^La ^Mass md mich minn ^Miss mo mont neb nev okla ^Ore ^Pa penn"
    " tenn ^Tex va vt ^Wash wis wisc wyo inc co cos corp pty ptys pte ptes ppty pptys ppte pptes rt ltd plc bancorp"
    " bhd assn univ intl sys tel est ext sq jr sr bros ed.d ph.d blvd rd esq etc al seq bldg"
)
ABBREV3 = _words("ca fig figs prop no nos art pp op")  # abbreviations only before a number
ABBREV4 = _words(  # abbreviations usually followed by a capital (titles and the like)
    "mr mrs ms ^Miss drs dr profs prof sens sen reps rep attys atty lt col gen messrs govs gov adm rev maj sgt"
    " cpl pvt mt capt st ste ave pres lieut hon brig cmdr comdr pfc spc supts supt det ft adj adv asst assoc ens"
    " insp mlle mme msgr sfc vs ^v alex wm jos cie a.k.a cf treas ph invt elec natl mfg mtg dept blvd rd", ACRO)
FOLLOW = _words(  # words after which an acronym's period also ends the sentence (case-sensitive capital)
    "^About ^According ^Additionally ^After ^An ^A ^As ^At ^But ^Earlier ^He ^Her ^Here ^However ^If ^In ^It"
    " ^Last ^Many ^More ^Mr. ^Ms. ^Now ^Once ^One ^Other ^Our ^She ^Since ^So ^Some ^Such ^That ^The ^Their ^Then"
    " ^There ^These ^They ^This ^We ^When ^While ^What ^Yet ^You", SGML)
THING_PART = f"(?:[dDoOlL]{APOSX}{AN})?{AN}+"
HTHING = rf"[A-Za-z0-9][A-Za-z0-9.,\u00ad]*(?:-(?:[A-Za-z0-9\u00ad]+|{ACRO}\.))+"
SENTEND = rf"{SPNL}(?:{SPNL}|[{_UPPER}]|{SGML})"
WORD = f"{WL}(?:{WL}|\\d)*(?:[.!?]{WL}(?:{WL}|\\d)*)*"
QUOTE_CHARS = "`\u2018\u2019\u201a\u201b\u201c\u201d\u0091\u0092\u0093\u0094\u201e\u201f\u2039\u203a\u00ab\u00bb"
APOWORDS = [  # words with an apostrophe inside, kept whole (each its own rule: the longest must win)
    f"{APOS}(?i:n){APOS}?", f"[lLdDjJ]{APOS}", f"(?i:dunkin|somethin|ol){APOS}", f"{APOS}(?i:em)",
    f"[A-HJ-XZn]{APOSX}{LET}{{2,}}", f"{APOS}[2-9]0(?i:s)", f"{APOS}(?i:till?)", f"{APOS}(?i:cause)",
    f"{LET}+[aeiouyAEIOUY]{APOSX}[aeiouA-Z]{LET}*", "(?i:cont'd\\.?|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l)",
]
FILENAME = (
    f"{AN}+(?:\\.{AN}+)*\\.(?i:docx|class|html|java|jpeg|bat|bmp|cgi|cpp|dll|doc|exe|gif|htm|jar|jpg|mov|mp3|pdf"
    "|php|png|ppt|sql|tar|txt|wav|xml|zip|gz|pl|ps|py|c|h|x)"
)
MISC = (
    "+%&~^|\\\\\u00a6\u00a7\u00a8\u00a9\u00ac\u00ae\u00af\u00b0-\u00ba\u00d7\u00f7\u0387\u2016\u2017\u2020-\u2023"
    "\u2030-\u2038\u203b\u203e-\u2042\u2044\u207a-\u207f\u208a-\u208e\u2100-\u214f\u2190-\u21ff\u2200-\u2bff"
    "\u3012\u30fb\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65"
)
LINE_BREAKS = re.compile("\r\n|[\r\u2028\u2029\u000b\u000c]")

# (pattern, action): the longest match wins, the earlier rule a tie. A pattern's group "t" (when
# present) is the token; the rest of the match is trailing context, counted for length only.
# Actions: keep, a literal replacement ("=..."), or a name in _MAKE (or handled in _longest).
_RULES: list[tuple[str, str]] = [
    (r"(?i:c\+\+|[cf]#)", "keep"),
    ("(?i:cannot)", "back3"),
    ("(?i:gonna|gotta|wanna|gimme|lemme)", "back2"),
    (f"{APOS}(?i:tis)", "back2"),
    (f"{APOS}(?i:twas)", "back3"),
    (SGML, "sgml"),
    ("&(?i:md|mdash|ndash);|[\u0096\u0097\u2013\u2014\u2015]", "=--"),
    ("&(?i:amp);", "=&"),
    ("&(?i:ht|tl|ur|lr|qc|ql|qr|odq|cdq|#[0-9]+);", "keep"),
    (f"(?P<t>{WORD}){REDAUX}", "soft"),
    (f"(?P<t>[A-Za-z\u00ad]*[A-MO-Za-mo-z]\u00ad*)(?i:n){APOSX}(?i:t)", "soft"),
    (WORD, "soft"),
    *[(pattern, "keep") for pattern in APOWORDS],
    (f"(?P<t>[yY]{APOS}){LET}", "keep"),
    (r"(?i:https?)://[^ \t\n\f\r\"<>|()]*[^ \t\n\f\r\"<>|.!?(){},-]", "keep"),
    (r"(?:(?i:www)\.(?:[^ \t\n\f\r\"<>|.!?(){},]+\.)+[a-zA-Z]{2,4}|(?:[^ \t\n\f\r\"`'<>|.!?(){},\-_$]+\.)+"
     r"(?i:com|net|org|edu))(?:/[^ \t\n\f\r\"<>|()]*[^ \t\n\f\r\"<>|.!?(){},-])?", "keep"),
    (r"(?:<|&lt;)?[a-zA-Z0-9][^ \t\n\f\r\"<>|(){}\u00a0]*@(?:[^ \t\n\f\r\"<>|(){}.\u00a0]+\.)*"
     r"[^ \t\n\f\r\"<>|(){}.\u00a0]+(?:>|&gt;)?", "keep"),
    (f"@[a-zA-Z_][a-zA-Z_0-9]*|#{WL}+", "keep"),
    (f"(?P<t>{REDAUX})[^A-Za-z]", "right"),
    (f"(?i:n){APOSX}(?i:t)", "right"),
    (r"\d{1,2}[-/]\d{1,2}[-/]\d{2,4}", "keep"),
    (f"[-+]?{NUM}", "soft"),
    ("[\u207a\u207b\u208a\u208b]?(?:[\u2070\u00b9\u00b2\u00b3\u2074-\u2079]+|[\u2080-\u2089]+)", "keep"),
    ("(?:\\d{1,4}[- \u00a0])?\\d{1,4}(?:\\\\?/|\u2044)\\d{1,4}", "frac"),
    ("[\u00bc\u00bd\u00be\u2153-\u215e]", "frac2"),
    ("-(?i:rrb|lrb|rcb|lcb|rsb|lsb)-|(?i:c\\.d\\.s|pro-|anti-|s(?:&|&amp;)p-500|s(?:&|&amp;)ls)"
     f"|(?i:cap){APOS}(?i:n)|(?i:c){APOS}(?i:est)", "amp"),
    (r"[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}", "keep"),
    (r"[A-Z]*\$|#", "keep"),
    ("[\u00a2\u00a3\u00a4\u00a5\u0080\u20a0\u20ac\u060b\u0e3f\u20a4\uffe0\uffe1\uffe5\uffe6]", "currency"),
    (f"(?P<t>{ACRO}\\.){SPNL}+{FOLLOW}{SPNL}", "acronym"),
    (f"(?P<t>{ABBREV3}\\.){SPNL}?\\d", "keep"),
    (f"(?P<t>(?:(?i:pt)[eyEY]|(?i:co))\\.){SP}(?i:ltd|lim)", "keep"),
    (f"(?P<t>{ABBREV1}\\.){SENTEND}", "twice"),
    (f"(?P<t>{ABBREV1}\\.)[\\s\\S]{{2}}", "keep"),
    (f"{ABBREV1}\\.", "twice"),  # only at the very end: the rule above takes any two characters after it
    (f"{ABBREV4}\\.", "keep"),
    (f"(?P<t>{ABBREV4}){SP}", "keep"),
    (f"(?P<t>{ACRO}){SPNL}", "keep"),
    (f"(?P<t>{APOS}[0-9][0-9]){SPNL}", "keep"),
    (f"(?P<t>{FILENAME})[ \t\u00a0\u2000-\u200a\u3000\n.?!,]", "keep"),
    (f"(?P<t>{WORD}\\.)[,;:\u3001]", "soft"),
    ("(?:\\([0-9]{3}\\)[ \u00a0]?|[0-9]{3}[- \u00a0.])[0-9]{3}[- \u00a0.][0-9]{4}", "phone"),
    ('(?P<t>"|&(?i:quot);)[A-Za-z0-9$]', "left"),
    ('"|&(?i:quot);', "right"),
    ("<<|>>|<|>", "keep"),
    (r"(?P<t>[<>]?[:;=][\-o*']?[()DPdpO\\{@|\[\]])[^A-Za-z0-9]", "smiley"),
    (r"[\-\^x=~<>']_[\-\^x=~<>']|\([\-\^x=~<>'][_.]?[\-\^x=~<>']\)"
     r"|\([\^x=~<>']-[\^x=~<>'`]\)", "smiley"),
    (r"\[", "=-LSB-"),
    (r"\]", "=-RSB-"),
    (r"\{", "=-LCB-"),
    (r"\}", "=-RCB-"),
    (r"\(", "=-LRB-"),
    (r"\)", "=-RRB-"),
    (r"-+", "dashes"),
    ("\\.{3,5}|(?:\\.[ \u00a0]){2,4}\\.|[\u0085\u2026]", "=..."),
    (r"@+|#+|_+", "keep"),
    (r"\*+|(?:\\\*){1,3}", "keep"),
    ("[,;:\u3001]", "keep"),
    (r"[?!]+", "keep"),
    ("[.\u00a1\u00bf\u037e\u0589\u061f\u06d4\u0700-\u0702\u07fa\u3002]", "keep"),
    (r"=|/", "keep"),
    (f"(?P<t>{HTHING}\\.)[,;:\u3001]", "soft"),
    (HTHING, "soft"),
    (f"(?P<t>{THING_PART}(?:[-_\u058a\u2010\u2011]{THING_PART})*\\.)[,;:\u3001]", "keep"),
    (f"{THING_PART}(?:[-_\u058a\u2010\u2011]{THING_PART})*", "keep"),
    (r"(?P<t>[A-Z]+(?:(?:[+&]|&amp;)[A-Z]+)+\.)[,;:\u3001]", "amp"),
    (r"[A-Z]+(?:(?:[+&]|&amp;)[A-Z]+)+", "amp"),
    ("(?P<t>')[A-Za-z][^ \t\n\r\u00a0]", "left"),
    (REDAUX, "right"),
    (f"''|[{QUOTE_CHARS}]{{1,2}}|{APOS}", "right"),
    (f"[{MISC}]", "keep"),
]
_COMPILED = [(re.compile(pattern), action) for pattern, action in _RULES]
_SKIP = re.compile("[ \t\u00a0\u2000-\u200b\u200e\u200f\u3000\ufeff\x00]+|&(?i:nbsp);")
_PLAIN = re.compile(f"{LET}+(?=[ \t]|\n|$)")  # a plain word before a space: the common case, decided at once
_ASSIMILATED = {"cannot", "gonna", "gotta", "wanna", "gimme", "lemme"}
_FRACTIONS = {"\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3", "\u2154": "2/3"}
_CURRENCY = {"\u00a2": "cents", "\u00a3": "#", "\u0080": "$", "\u00a4": "$", "\u20a0": "$", "\u20ac": "$"}
_PAREN = {"(": "-LRB-", ")": "-RRB-"}
_MAKE = {  # what a rule's action makes of the text it matched
    "soft": lambda t: t.replace("\u00ad", "") or "-", "left": lambda t: _quotes(t, True),
    "right": lambda t: _quotes(t, False), "amp": lambda t: re.sub("(?i:&amp;)", "&", t),
    "frac": lambda t: t.replace(" ", "\u00a0"), "sgml": lambda t: t.replace(" ", "\u00a0"),
    "frac2": lambda t: _FRACTIONS.get(t, t), "currency": lambda t: _CURRENCY.get(t, t),
    "phone": lambda t: re.sub("[()]", lambda m: _PAREN[m.group()], t.replace(" ", "\u00a0")),
    "smiley": lambda t: re.sub("[()]", lambda m: _PAREN[m.group()], t),
    "dashes": lambda t: "--" if 3 <= len(t) <= 4 else t,
}
# fmt: on


def _longest(text: str, at: int) -> tuple[str, int]:
    """The token starting at ``at`` and how far the scanner moves past it."""
    best, best_length = None, 0
    for pattern, action in _COMPILED:
        match = pattern.match(text, at)
        if match is not None and match.end() - at > best_length:
            best, best_length = (match, action), match.end() - at
    if best is None:
        return "", 1  # a character no rule knows is deleted, as the Java tokenizer does by default
    match, action = best
    token = match.group("t") if "t" in match.re.groupindex else match.group()
    if action.startswith("back"):  # the rule takes a whole word but gives its last letters back
        keep = len(token) - int(action[-1])
        return token[:keep], keep
    if action == "twice":  # the abbreviation keeps its period and the period also ends the sentence
        return _MAKE["soft"](token), len(token) - 1
    if action == "acronym":  # a one-letter one gives its period back; a longer one keeps it, and ends the sentence
        return (token[0], 1) if len(token) == 2 else (token, len(token) - 1)
    made = action[1:] if action[0] == "=" else _MAKE[action](token) if action in _MAKE else token
    return made, len(token)


def _scan(text: str) -> list[list[str]]:
    """Tokens of every ``\\n``-separated line of ``text``, lower-cased, punctuation kept."""
    lines: list[list[str]] = [[]]
    at = 0
    while at < len(text):
        if text[at] == "\n":
            lines.append([])
            at += 1
            continue
        skip = _SKIP.match(text, at)
        if skip is not None:
            at = skip.end()
            continue
        plain = _PLAIN.match(text, at)
        if plain is not None and plain.group().lower() not in _ASSIMILATED:
            token, step = plain.group(), plain.end() - at
        else:
            token, step = _longest(text, at)
        if token:
            lines[-1].append(token.lower())
        at += step
    return lines


def ptb_tokenize_lines(captions: Sequence[str]) -> list[str]:
    """Every caption tokenised as pycocoevalcap's PTBTokenizer does when given them in this order
    (one text, a caption a line; a newline inside a caption is a space, as there): lower case,
    tokens joined by single spaces, punctuation dropped."""
    text = "\n".join(LINE_BREAKS.sub(" ", caption.replace("\n", " ")) for caption in captions)
    lines = _scan(text)
    return [" ".join(token for token in line if token not in DROPPED) for line in lines]


@lru_cache(maxsize=65536)
def ptb_tokenize(text: str) -> str:
    """One caption tokenised as pycocoevalcap's PTBTokenizer does when it is the last line given."""
    return ptb_tokenize_lines([text])[0]


METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE_L", "CIDEr", "SPICE")
SPICE_JARS = ("spice-1.0.jar", "lib/stanford-corenlp-3.6.0.jar", "lib/stanford-corenlp-3.6.0-models.jar")


class CaptionScores(dict):
    """Metric -> corpus score, ``None`` where it could not be computed; ``missing`` says why."""

    def __init__(self, scores: dict[str, float | None], missing: dict[str, str]) -> None:
        super().__init__(scores)
        self.missing = missing


def _meteor(gts: dict, res: dict) -> float:
    from pycocoevalcap.meteor.meteor import Meteor

    meteor = Meteor()
    try:
        return float(meteor.compute_score(gts, res)[0])
    finally:  # the jar serves on pipes: end it now, not whenever the object is collected
        process = meteor.meteor_p
        for stream in (process.stdin, process.stdout, process.stderr):
            stream.close()
        process.kill()
        process.wait()
        if meteor.lock.locked():  # a failed call keeps it, and its __del__ would then wait forever
            meteor.lock.release()


def _spice(gts: dict, res: dict) -> float:
    from pycocoevalcap.spice.spice import Spice

    return float(Spice().compute_score(gts, res)[0])


def spice_missing() -> str | None:
    """Why SPICE cannot run here, or ``None``; checks the files only (pycocoevalcap's Spice()
    would download the Stanford CoreNLP jars when they are absent)."""
    import pycocoevalcap.spice.spice as spice

    folder = Path(spice.__file__).parent
    absent = [name for name in SPICE_JARS if not (folder / name).is_file()]
    return f"SPICE needs {', '.join(absent)} in {folder}; vislang never downloads them" if absent else None


def score_captions(
    references: Mapping[Hashable, Sequence[str]],
    candidates: Mapping[Hashable, str],
    tokenize: bool = True,
    java: bool = True,
) -> CaptionScores:
    """COCO caption metrics of one candidate per key against that key's references.

    ``tokenize``: pycocoevalcap's PTB tokenisation, references in one pass and candidates in
    another (as its COCOEvalCap does); otherwise the texts are taken as already tokenised.
    ``java=False`` leaves out METEOR and SPICE, which start Java programs."""
    keys = list(references)
    odd = set(keys) ^ set(candidates)
    if not keys or odd:
        raise ValueError(
            f"references and candidates need the same keys, at least one (odd key: {next(iter(odd), None)!r})"
        )
    for key in keys:
        if isinstance(references[key], str) or not references[key]:
            raise ValueError(f"references[{key!r}] must be a non-empty list of captions")
    refs, hyps = [list(references[key]) for key in keys], [candidates[key] for key in keys]
    if tokenize:
        flat = iter(ptb_tokenize_lines([caption for group in refs for caption in group]))
        refs = [[next(flat) for _ in group] for group in refs]
        hyps = ptb_tokenize_lines(hyps)
    return _score(dict(enumerate(refs)), {i: [hyp] for i, hyp in enumerate(hyps)}, java)


def _score(gts: dict, res: dict, java: bool) -> CaptionScores:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    scores: dict[str, float | None] = dict.fromkeys(METRICS)
    bleu = Bleu(4).compute_score(gts, res, verbose=0)[0]
    scores.update({f"BLEU-{n + 1}": float(value) for n, value in enumerate(bleu)})
    scores["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    no_java = None if shutil.which("java") else "needs Java: no `java` on PATH"
    missing = {
        "METEOR": no_java if java else "not requested (java=False)",
        "SPICE": (no_java or spice_missing()) if java else "not requested (java=False)",
    }
    for name, run in (("METEOR", _meteor), ("SPICE", _spice)):
        if missing[name] is None:
            try:
                scores[name] = run(gts, res)
            except (OSError, ValueError, subprocess.SubprocessError) as error:
                missing[name] = f"{name} failed: {first_line(error)}"
    return CaptionScores(scores, {name: reason for name, reason in missing.items() if reason is not None})
