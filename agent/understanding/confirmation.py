"""How the driver answered "Shall I order it?": yes, no, a change, a question or unclear. Money moves only on
a yes where every word is understood; a refusal, hesitation or question anywhere outweighs any yes word."""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

__all__ = [
    "Answer",
    "Pending",
    "bare_answer",
    "classify_answer",
    "judge_with_model",
    "second_opinion",
]

AnswerKind = Literal["yes", "no", "change", "question", "unclear"]
Verdict = Literal["yes", "no", "change", "other"]

# An answer to a yes/no question is short; anything longer is not read at all (bounded work per call).
MAX_ANSWER_CHARS = 240
MAX_ANSWER_TOKENS = 40  # words, Chinese characters and punctuation


class Pending(StrEnum):
    """What the question asks to do."""

    PURCHASE = "purchase"  # "A large pepperoni pizza, 89 yuan. Shall I order it?"
    CANCEL = "cancel"  # "Cancel your order of a latte?"
    CHANGE = "change"  # "Change your order to two lattes?"


@dataclass(frozen=True)
class Answer:
    kind: AnswerKind
    # change: what to change ("make it two"); question: the question; no: any words after the refusal
    rest: str = ""
    reason: str = ""  # which rule decided, for logs and tests


class _W:
    """What a word or phrase is before the question is known, and after (the semantic classes).

    Plain strings, not an Enum: Enum members hash in Python, and this is looked up for every word.
    """

    YES = "yes"  # yes, sure, ok, 好的, 没问题
    NO = "no"  # no, never mind, 算了, 不用了
    NOT_WANT = "not_want"  # "I don't want it", 不要了: a no to an order, but ambiguous to "Cancel it?"
    HALT = "halt"  # stop, forget it, scratch that: a no to an order, ambiguous to "Cancel it?"
    WAIT = "wait"  # wait, hmm, maybe, let me think, 等一下, 再想想
    NEG = "neg"  # don't, not, 不, 别: negates the next word, or is a bare no
    ORDER = "order"  # order, place, buy, 下单, 买, 要
    CANCEL = "cancel"  # cancel, 取消
    KEEP = "keep"  # keep, leave, 保留
    EDIT = "edit"  # make, change, add, without, 改成, 换成, 加
    SIZE = "size"  # large, two, 大杯, 两份
    ASK = "ask"  # how, what, is it, 多少, 吗
    BUT = "but"  # but, 但是
    AND = "and"  # and, also, 还有
    FILL = "fill"  # uh, please, thanks, it, sir, 啊, 吧, 请
    OBJ = "obj"  # the order, 订单: names the order itself
    OTHER = "other"  # anything not in the lexicon
    STOP = "stop"  # , . ! 。 ，: a clause boundary
    QMARK = "qmark"  # ?
    AMBIG = "ambig"  # decided only with the question: "don't cancel" to "Shall I order it?"


# ---------------------------------------------------------------------------------------------- lexicon

_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(
    rf"(?P<han>[{_HAN}])|(?P<word>[^\W_{_HAN}]+(?:'[^\W_{_HAN}]+)*)|(?P<ask>\?)|(?P<stop>[,.;:!。、，；：！~—–]+)"
)
_LEXICON: dict[tuple[str, ...], str] = {}


def _key(phrase: str) -> tuple[str, ...]:
    return tuple(m.group() for m in _TOKEN.finditer(phrase))


def _add(kind: str, phrases: str) -> None:
    for phrase in phrases.split("|"):
        phrase = phrase.strip()
        if not phrase:
            continue
        variants = {phrase, phrase.replace("'", "")}  # ASR writes "dont", "thats right"
        for variant in variants:
            _LEXICON[_key(variant)] = kind


_add(_W.YES, """
    yes | yeah | yea | yep | yup | ya | yah | yeh | yas | ye | yeap | yip | aye | sure | sure thing |
    for sure |
    surely | ok | okay | okey | okie | oki | kay | okey dokey | okay dokey | okie dokie | alright |
    all right |
    alrighty | aight | right | that's right | that is right | correct | that's correct | that is correct |
    exactly |
    affirmative | absolutely | definitely | certainly | of course | ofcourse | indeed | totally | perfect |
    great |
    cool | fine | sounds good | sounds great | sounds fine | sounds perfect | sounds right | that works |
    works for me | fine by me | good to go | go ahead | go on | go for it | do it | do that | just do it |
    please do |
    let's do it | let's do that | let's go | proceed | please proceed | confirm | confirmed | i confirm |
    confirm it | yes i do | i do | i want it | i want that | i'd like that | i would like that |
    i'd like it |
    i would like it | roger | roger that | will do | why not | no problem | not a problem | you bet |
    by all means |
    with pleasure | go ahead with it | go ahead and | yes indeed | good idea | sounds like a plan | go head
""")
_add(_W.YES, """
    好 | 好的 | 好滴 | 好得 | 好哒 | 好了 | 是 | 是的 | 是滴 | 对 | 对的 | 对滴 | 没错 | 可以 | 可以的 |
    行 | 行的 | 成 |
    确认 | 确定 | 没问题 | 当然 | 当然可以 | 同意 | 就这样 | 就这么办 | 就这么定了 | 就它了 | 就这个 |
    就要这个 | 妥 | 妥了 |
    必须的 | 要得 | 也行 | 没有问题 | 没啥问题
""")
_add(_W.ORDER, """
    order | order now | place | place it | put it in | buy | buy it | get it | purchase | book it | send |
    send it | submit | 要 | 下单 | 下个单 | 买 | 订 | 购买 | 订购 | 点单 | 付款 | 支付 | 结账 | 买单
""")
_add(_W.CANCEL, "cancel | call it off | 取消 | 撤销 | 退掉 | 退单 | 撤单 | 退")
_add(_W.KEEP, "keep | leave | leave it be | leave it as is | 保留 | 留着 | 留下")
_add(_W.NO, """
    no | nope | nah | naw | nay | no no | no thanks | no thank you | no way | hell no | negative |
    never mind |
    nevermind | nvm | never mind then | not now | not yet | not today | not really | not anymore |
    not interested |
    not at all | i changed my mind | changed my mind | change of plans | change of plan | i'll pass | pass |
    no need | not needed | too expensive | that's too expensive | too much | that's wrong | wrong |
    incorrect |
    i'd rather not | rather not | let's not | nuh uh | not for me | don't bother | absolutely not |
    definitely not |
    of course not | certainly not | no chance | i'm not hungry | not hungry
""")
_add(_W.NO, """
    不用了 | 不了 | 先不了 | 算了 | 不行 | 不好 | 不对 | 不是 | 没有 | 不可以 | 拉倒 | 免了 | 不必了 |
    没必要 |
    太贵 | 太贵了 | 改天 | 下次 | 下次再说 | 以后再说
""")
_add(_W.NOT_WANT, """
    i don't want it | don't want it | i don't want that | don't want that | i don't need it |
    don't need it |
    i don't want | don't want | i don't need | don't need | i do not want | 不要了 | 不想要了 | 不想要 |
    不需要了 |
    不要这个
""")
_add(_W.HALT, """
    stop | abort | forget it | forget about it | forget that | scratch that | drop it | skip it | skip |
    停 | 停下 | 停止 | 别弄了
""")
_add(_W.WAIT, """
    wait | wait a second | wait a sec | wait a minute | wait wait | hold on | hang on | hold up | one sec |
    one second | a second | a sec | just a sec | just a second | just a moment | one moment | a moment |
    a minute |
    give me a second | give me a sec | give me a minute | let me think | let me think about it |
    let me see |
    let me check | let me | i'm not sure | not sure | unsure | i don't know | don't know | dunno | i dunno |
    no idea | thinking | i'm thinking | maybe | perhaps | possibly | probably | i guess | i guess so |
    i think so |
    i suppose | i suppose so | kind of | sort of | kinda | sorta | i don't mind | whatever | later |
    maybe later |
    not sure yet | ask me later | actually wait | yeah right
""")
_add(_W.WAIT, """
    等 | 等等 | 等一下 | 等一等 | 等下 | 等会 | 等会儿 | 等一会 | 等一会儿 | 稍等 | 稍等一下 | 慢着 | 且慢 |
    再想想 | 想想 |
    想一想 | 我想想 | 让我想想 | 我再想想 | 考虑一下 | 考虑考虑 | 再考虑 | 再考虑一下 | 再说 | 不确定 |
    不知道 | 不清楚 |
    可能 | 也许 | 或许 | 大概 | 看看 | 再看看 | 还没想好 | 没想好 | 犹豫 | 随便 | 都行 | 都可以 | 无所谓 |
    没事 | 没关系 |
    先这样 | 应该吧 | 不要紧
""")
_add(_W.NEG, "don't | do not | not | never | no need to")
_add(_W.NEG, "不 | 不要 | 不用 | 别 | 甭 | 没 | 不想 | 不必 | 先不 | 先别 | 不需要 | 先不要")
_add(_W.EDIT, """
    make | make it | make that | change | change it to | change that to | change to | switch | switch to |
    swap |
    replace | add | remove | without | with | extra | upgrade | substitute | hold the | except
""")
_add(_W.EDIT, """
    改成 | 改为 | 换成 | 换为 | 改 | 换 | 换个 | 加 | 再加 | 多加 | 加个 | 来个 | 再来 | 再要 | 另外 |
    不加 | 不放 | 别放 |
    别加 | 去冰 | 少冰 | 多冰 | 去掉 | 少放 | 多放 | 少 | 加大
""")
_add(_W.SIZE, """
    large | medium | small | regular | big | tall | grande | venti | huge | extra large | one | two |
    three | four |
    five | six | seven | eight | nine | ten | twelve | dozen | couple | a couple | another | another one |
    one more |
    both | half | single | double | triple
    | 大杯 | 中杯 | 小杯 | 超大杯 | 特大杯 | 大份 | 中份 | 小份 | 大号 | 中号 | 小号 | 大的 | 小的 | 中的 |
    大一点 | 小一点 |
    双份
""")
for _n in "一二两三四五六七八九十":
    for _m in "份杯个瓶盒块碗张罐串只包袋":
        _LEXICON[(_n, _m)] = _W.SIZE
_add(_W.ASK, """
    what | what's | how | how's | when | when's | where | where's | which | who | whom | whose | why |
    what about |
    how about | you sure | is it | is that | is this | is there | is the | are you | are they | are there |
    are the |
    does it | does that | do you | do they | do i | can you | can i | could you | could i | would you |
    would it |
    will it | will you | will that | should i | should we | did you | isn't it | isn't that | is it the |
    how much |
    how long
""")
_add(_W.ASK, """
    吗 | 呢 | 多少 | 什么 | 啥 | 几 | 怎么 | 怎样 | 哪 | 谁 | 为什么 | 为啥 | 多久 | 多长 | 多大 | 是不是 |
    有没有 | 能不能 |
    可不可以 | 要不要 | 好不好 | 行不行 | 对不对 | 会不会 | 对吧 | 是吧 | 可以吧
""")
_add(_W.BUT, "but | though | however | although | 但是 | 不过 | 可是 | 只是")
_add(_W.AND, "and | also | plus | and also | 还有 | 而且 | 然后")
_add(_W.FILL, """
    uh | um | umm | uhm | er | erm | ah | oh | eh | well | so | like | just | then | now | right now |
    right away |
    please | pleas | plz | pls | thanks | thx | thank you | thank you very much | thanks a lot |
    many thanks |
    cheers | sir | sire | ma'am | mam | madam | mate | buddy | man | dude | bro | boss | it | that | this |
    them |
    those | these | that one | this one | the | a | an | to | for | for me | me | us | again | actually |
    really |
    i mean | very | very much | hey | in that case | instead | anymore | any more | dat | dis | da | mhm |
    mhmm | mm hmm | uh huh | no worries |
    not bad | hmm okay
""")
_add(_W.FILL, """
    啊 | 吧 | 呀 | 哦 | 噢 | 喔 | 嘛 | 了 | 啦 | 哈 | 嘞 | 呃 | 额 | 嗯 | 唔 | 恩 | 哎 | 诶 | 欸 | 那 |
    那就 | 就 | 那么 | 请 |
    谢谢 | 谢谢你 | 谢了 | 多谢 | 麻烦 | 麻烦你 | 麻烦你了 | 帮我 | 给我 | 我 | 你 | 它 | 这个 | 那个 | 这 |
    一下 | 的 | 先 |
    现在 | 马上 | 赶紧 | 直接 | 还是 | 其实 | 快 | 快点 | 哈哈 | 不好意思 | 对不起 | 不客气 | 不错 | 也
""")
_add(_W.OBJ, "the order | my order | that order | this order | 订单 | 这单 | 外卖")
# Openings that start with a yes word but are not an answer: "要不然去公司吧" (or else, go to the office),
# "要是" (if), "好像" (seems), "对了" (by the way), "对面" (opposite), "行驶" (driving).
_add(_W.OTHER, "要不 | 要不然 | 要是 | 好像 | 对了 | 对面 | 行驶 | 好多 | 好几 | 好吃 | 好看 | 好玩 | 加油")
_add(_W.OTHER, "是我 | 确定一下")
_LONGEST = max(len(k) for k in _LEXICON)
_PREFIXES = {k[:n] for k in _LEXICON for n in range(1, len(k) + 1)}

# ASR spellings ("yesss", "yeaaah", "nooo", "okayyy", "hmmm", "ummm", "pleeease"): one regex, once a word.
_SHAPE = re.compile(
    r"(?P<size>\d+)|(?P<wait>h+m+)|(?P<fill>u+[mh]+|u+h+m+|e+r+m*|a+h+|o+h+|m+|e+h+|ple+a*s+e*|pl[sz]+)"
    r"|(?P<yes>y+e+s+|y+e+a+h*|y+e+p+|y+u+p+|o+k+(?:a+y+)?)|(?P<no>n+o+|n+o+p+e+|n+a+h+)"
)
_SHAPE_KIND = {"size": _W.SIZE, "wait": _W.WAIT, "fill": _W.FILL, "yes": _W.YES, "no": _W.NO}
# Chinese "without": "不要辣" (no chilli), "不加冰" (no ice) is a change when a thing follows.
_ZH_WITHOUT = {("不", "要"), ("不", "加"), ("不", "放"), ("别", "放"), ("别", "加")}


@dataclass(slots=True)
class _Atom:
    w: str  # a _W class
    start: int
    end: int
    key: tuple[str, ...] = ()
    negated: bool = False
    has_target: bool = False  # an EDIT followed by what to change ("make it two", not "change it")


def _normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = text.translate(_CLEAN)
    text = _OK.sub("ok", text)
    return re.sub(r"(?<=\w)-(?=\w)", " ", text)  # "uh-huh", "okey-dokey"


_CLEAN = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u200b": None, "\u200c": None,
                        "\u200d": None, "\ufeff": None, "\u3000": " "})
_OK = re.compile(r"\bo\.\s?k\b\.?", re.IGNORECASE)


def _atoms(norm: str) -> list[_Atom] | None:
    """The words of the answer, longest lexicon phrase first; None when there are too many for an answer."""
    tokens = []
    for m in _TOKEN.finditer(norm):
        if len(tokens) == MAX_ANSWER_TOKENS:
            return None
        tokens.append((m.lastgroup, m.group().casefold(), m.start(), m.end()))
    atoms: list[_Atom] = []
    i, count = 0, len(tokens)
    while i < count:
        group, word, start, end = tokens[i]
        if group == "ask" or group == "stop":
            atoms.append(_Atom(_W.QMARK if group == "ask" else _W.STOP, start, end))
            i += 1
            continue
        key: tuple[str, ...] = ()
        best, kind = (word,), None
        for j in range(i, min(i + _LONGEST, count)):  # walk the phrase prefixes: one or two steps, mostly
            if tokens[j][0] == "ask" or tokens[j][0] == "stop":
                break
            key += (tokens[j][1],)
            if key not in _PREFIXES:
                break
            found = _LEXICON.get(key)
            if found is not None:
                best, kind = key, found
        if kind is None:
            kind = _W.OTHER
            shape = _SHAPE.fullmatch(word) if group == "word" else None
            if shape is not None:
                kind = _SHAPE_KIND[shape.lastgroup or ""]
        i += len(best)
        atoms.append(_Atom(kind, start, tokens[i - 1][3], best))
    return atoms


def _next(atoms: list[_Atom], i: int, skip: frozenset[str] = frozenset({_W.FILL})) -> int | None:
    """Index of the next atom after i in the same clause that is not in skip."""
    for j in range(i + 1, len(atoms)):
        if atoms[j].w in (_W.STOP, _W.QMARK):
            return None
        if atoms[j].w not in skip:
            return j
    return None


def _resolve(atoms: list[_Atom]) -> None:
    """Bind words to each other: "cancel order", "change it" / "change it to two", "don't cancel"."""
    seen_content = False  # scanning backwards: is there anything to change after this word?
    for atom in reversed(atoms):
        if atom.w == _W.EDIT:
            atom.has_target = seen_content
        seen_content = seen_content or atom.w not in (_W.FILL, _W.OBJ, _W.STOP, _W.QMARK)
    for i, atom in enumerate(atoms):
        if atom.w == _W.ORDER and i and _prev_word(atoms, i) in (_W.CANCEL, _W.KEEP):
            atom.w = _W.OBJ  # "cancel order", "keep the order"
    for i, atom in enumerate(atoms):
        if atom.w in (_W.BUT, _W.AND):  # "yes but no onions", "and not too spicy"
            j = _next(atoms, i)
            if j is not None and atoms[j].w in (_W.NO, _W.NEG):
                k = _next(atoms, j)
                if k is not None and atoms[k].w in (_W.OTHER, _W.SIZE):
                    atoms[j].w, atoms[j].has_target = _W.EDIT, True
    for i, atom in enumerate(atoms):
        if atom.w != _W.NEG:
            continue
        j = _next(atoms, i)
        target = atoms[j] if j is not None else None
        if target is None:
            atom.w = _W.NO  # "please don't", "不"
        elif target.w in _NEGATABLE or (target.w == _W.EDIT and not target.has_target):
            atom.w, target.negated = _W.FILL, True
        elif target.w in (_W.EDIT, _W.SIZE):
            atom.w, atom.has_target = _W.EDIT, True  # "don't add cheese", "not two, three"
        elif target.w == _W.OTHER and atom.key in _ZH_WITHOUT:
            atom.w, atom.has_target = _W.EDIT, True  # "不要辣"
        elif target.w in (_W.NO, _W.NOT_WANT, _W.HALT, _W.WAIT):
            atom.w = _W.AMBIG  # "don't wait", "not never mind"
        else:
            atom.w = _W.NO  # "don't, ...", "don't navigate"


_NEGATABLE = frozenset({_W.YES, _W.ORDER, _W.CANCEL, _W.KEEP})


def _prev_word(atoms: list[_Atom], i: int) -> str | None:
    for j in range(i - 1, -1, -1):
        if atoms[j].w in (_W.STOP, _W.QMARK):
            return None
        if atoms[j].w != _W.FILL:
            return atoms[j].w
    return None


# What a verb means, by the question asked: (plain, negated).
_VERBS: dict[Pending | None, dict[str, tuple[str, str]]] = {
    Pending.PURCHASE: {
        _W.ORDER: (_W.YES, _W.NO), _W.CANCEL: (_W.NO, _W.AMBIG), _W.KEEP: (_W.AMBIG, _W.AMBIG),
        _W.EDIT: (_W.AMBIG, _W.AMBIG), _W.NOT_WANT: (_W.NO, _W.NO), _W.HALT: (_W.NO, _W.NO),
    },
    Pending.CANCEL: {
        _W.ORDER: (_W.AMBIG, _W.AMBIG), _W.CANCEL: (_W.YES, _W.NO), _W.KEEP: (_W.NO, _W.AMBIG),
        _W.EDIT: (_W.AMBIG, _W.AMBIG), _W.NOT_WANT: (_W.AMBIG, _W.AMBIG), _W.HALT: (_W.AMBIG, _W.AMBIG),
    },
    Pending.CHANGE: {
        _W.ORDER: (_W.AMBIG, _W.AMBIG), _W.CANCEL: (_W.NO, _W.AMBIG), _W.KEEP: (_W.NO, _W.AMBIG),
        _W.EDIT: (_W.YES, _W.NO), _W.NOT_WANT: (_W.NO, _W.NO), _W.HALT: (_W.NO, _W.NO),
    },
    # Nothing pending (bare_answer): only "cancel" alone is a no; verbs are requests.
    None: {
        _W.ORDER: (_W.OTHER, _W.OTHER), _W.CANCEL: (_W.NO, _W.OTHER), _W.KEEP: (_W.OTHER, _W.OTHER),
        _W.EDIT: (_W.OTHER, _W.OTHER), _W.NOT_WANT: (_W.NO, _W.NO), _W.HALT: (_W.NO, _W.NO),
    },
}


def _meaning(atom: _Atom, action: Pending | None, verbs: dict[str, tuple[str, str]]) -> str:
    if atom.w == _W.YES:
        return _W.NO if atom.negated else _W.YES
    if atom.w == _W.EDIT and atom.has_target:
        return _W.EDIT
    if atom.w in verbs:
        plain, negated = verbs[atom.w]
        return negated if atom.negated else plain
    if atom.w == _W.OBJ and action is None:
        return _W.OTHER  # "cancel my order" with nothing pending is a request
    return atom.w


def _read(text: str, action: Pending | None) -> tuple[str, list[_Atom]] | None:
    """The normalized text and its atoms, meaning what they mean to this question; None when too long."""
    if len(text) > 4 * MAX_ANSWER_CHARS:  # before normalizing: NFKC of a few KB is cheap, but not free
        return None
    norm = _normalize(text).strip()
    if len(norm) > MAX_ANSWER_CHARS:
        return None
    atoms = _atoms(norm)
    if atoms is None:
        return None
    _resolve(atoms)
    verbs = _VERBS[action]
    for atom in atoms:
        atom.w = _meaning(atom, action, verbs)
    return norm, atoms


_TRIM = " \t\r\n,.;:!。，、；：！~—–"
_ANSWER_WORDS = (_W.YES, _W.NO, _W.WAIT, _W.FILL, _W.OBJ, _W.STOP, _W.BUT, _W.AND, _W.AMBIG)


def _rest(norm: str, start: int) -> str:
    rest = norm[start:].strip(_TRIM)
    return rest if any(c.isalnum() for c in rest) else norm.strip(_TRIM)


def classify_answer(text: str, *, action: Pending = Pending.PURCHASE) -> Answer:
    """How the driver answered a confirmation question about `action`. Only "yes" may make it happen.

    Every word must be accounted for (English, Chinese or both, as ASR writes them): words the lexicon does
    not know make the answer "unclear" (or "no" after a leading refusal), never "yes".

    The order of the rules is the order of safety: a change, then a question, then anything ambiguous or not
    understood, then refusal and hesitation; "yes" is what is left when every word is a yes word or a filler.
    """
    action = Pending(action)
    read = _read(text, action)
    if read is None:
        return Answer("unclear", reason="too-long")
    norm, atoms = read
    if not atoms:
        return Answer("unclear", reason="empty")
    kinds = [a.w for a in atoms]

    # 1. A change after the answer words: "yes but make it two", "ok make it large", "好，改成两份".
    # A size alone with a question mark asks ("是大份的吗", "a large?"); a verb still changes: "make it two?".
    first = next((i for i, w in enumerate(kinds) if w not in _ANSWER_WORDS), None)
    asked = _W.ASK in kinds or _W.QMARK in kinds
    if first is not None and (kinds[first] == _W.EDIT or (kinds[first] == _W.SIZE and not asked)):
        answered = [a for a in atoms[:first] if a.w not in (_W.FILL, _W.OBJ)]
        return Answer("change", _rest(norm, answered[-1].end if answered else 0), "change")

    # 2. A question anywhere: "how much is it?", "is that the large one", "多少钱？", "yes?".
    if asked:
        # The question starts at its first word that is not an answer word: "yes, how long will it take?".
        asking = (a.start for a in atoms if a.w == _W.ASK or a.w not in (*_ANSWER_WORDS, _W.QMARK))
        # "Is there any sushi place around?" is a question too, but maybe not about the order: words the
        # lexicon does not know say so (the turn engine asks the model which it is).
        about = "question-other-words" if kinds.count(_W.OTHER) >= 2 else "question"
        return Answer("question", _rest(norm, next(asking, 0)), about)

    if _W.AMBIG in kinds:
        return Answer("unclear", reason="ambiguous")

    meaningful = [w for w in kinds if w not in (_W.FILL, _W.OBJ, _W.STOP)]
    if first is not None:  # words that are not an answer: a new request, a ramble, noise
        if meaningful[0] == _W.NO and _W.YES not in meaningful:
            return Answer("no", _rest(norm, atoms[first].start), "refusal-then-other-words")
        return Answer("unclear", reason="other-words")

    if _W.NO in meaningful:
        first_no = meaningful.index(_W.NO)
        after, before = meaningful[first_no + 1 :], meaningful[:first_no]
        if _W.YES in after:
            return Answer("unclear", reason="yes-after-refusal")  # "no wait yes", "no... ok"
        if _W.WAIT in after:
            return Answer("unclear", reason="hesitation-after-refusal")  # "no wait"
        if _W.YES in before and action is Pending.CANCEL:
            # "好，不要了" to "Cancel it?" could mean either
            return Answer("unclear", reason="yes-then-refusal")
        return Answer("no", reason="refusal-after-yes" if _W.YES in before else "refusal")
    if _W.WAIT in meaningful:
        return Answer("unclear", reason="hesitation")
    if _W.BUT in meaningful:
        return Answer("unclear", reason="dangling-but")  # "yes, but..."
    if _W.YES in meaningful:
        return Answer("yes", reason="yes-words")
    return Answer("unclear", reason="no-answer-words")  # "please", "thanks", "uh"


def bare_answer(text: str) -> Literal["yes", "no"] | None:
    """With nothing pending: "yes" or "no" when the utterance is only a yes or a no ("yes please", "好的",
    "no thanks", "不用了"), else None ("好的，帮我导航回家" and "yes navigate home" are requests)."""
    read = _read(text, None)
    if read is None:
        return None
    _, atoms = read
    kinds = [a.w for a in atoms if a.w not in (_W.FILL, _W.STOP)]
    if not kinds or any(w not in (_W.YES, _W.NO) for w in kinds):
        return None
    if _W.NO not in kinds:
        return "yes"
    return None if _W.YES in kinds[kinds.index(_W.NO) :] else "no"


# ---------------------------------------------------------------------------------------------- model

_JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"answer": {"type": "string", "enum": ["yes", "no", "change", "other"]}},
    "required": ["answer"],
    "additionalProperties": False,
}
_JUDGE_SYSTEM = (
    "A car assistant asked the driver a yes-or-no question. Say what the driver's answer means.\n"
    "yes: the driver clearly agrees to exactly what was asked.\n"
    "no: the driver refuses, says never mind, or cancels it.\n"
    "change: the driver wants it different (another size, quantity or item, or something added or removed).\n"
    "other: anything else: hesitation, a question, a new request, noise, or a mixed or unclear answer.\n"
    "When you are not sure, answer other. Reply with JSON only."
)


def judge_with_model(model: Any, question: str, answer_text: str, *, max_tokens: int = 16) -> Verdict:
    """The local model's reading of an answer, constrained to yes/no/change/other. A second opinion only.

    Blocking: call it from the model's worker thread (`agent.llm.base.LanguageModel` is not thread-safe).
    """
    # JSON-quoted so an answer cannot pose as part of the instructions.
    asked = json.dumps(question[:300], ensure_ascii=False)
    said = json.dumps(answer_text[:MAX_ANSWER_CHARS], ensure_ascii=False)
    messages = [
        {"role": "system", "content": _JUDGE_SYSTEM},
        {"role": "user", "content": f"Question: {asked}\nDriver's answer: {said}"},
    ]
    prompt = model.render(messages, [])
    steps = model.generate(prompt.tokens, max_tokens=max_tokens, json_schema=_JUDGE_SCHEMA)
    out = "".join(step.text for step in steps)
    try:
        verdict = json.loads(out)["answer"]
    except (ValueError, KeyError, TypeError):
        return "other"
    return verdict if verdict in ("yes", "no", "change") else "other"


def second_opinion(
    rules: Answer, text: str, verdict: Verdict, *, action: Pending = Pending.PURCHASE
) -> Answer:
    """The rules combined with the model's verdict. The rules stay authoritative: only "unclear" is looked at.

    Measured on the dev Qwen (1.5B): it agrees with the rules on 65 % of the table, calls most clear answers
    to "Cancel it?" a change, and says "change" to new requests ("take me home"). So for a cancel question it
    is not asked at all; otherwise it may turn "unclear" into no, into a change only when a size, quantity or
    edit word is there ("the vegetarian one"), and into yes only when the rules found a yes word beside words
    they did not know ("yes, the pepperoni from Luigi's") and no refusal, hesitation, question, change or
    ambiguity.
    """
    if rules.kind != "unclear" or Pending(action) is Pending.CANCEL:
        return rules
    read = _read(text, action)
    kinds = {a.w for a in read[1]} if read else set()
    if verdict == "no":
        return Answer("no", reason="model-no")
    if verdict == "change" and kinds & {_W.EDIT, _W.SIZE}:
        return Answer("change", rest=text.strip(_TRIM), reason="model-change")
    doubt = {_W.NO, _W.WAIT, _W.ASK, _W.QMARK, _W.AMBIG, _W.BUT, _W.EDIT, _W.SIZE}
    if verdict == "yes" and rules.reason == "other-words" and _W.YES in kinds and not kinds & doubt:
        return Answer("yes", reason="model-yes-with-yes-word")
    return Answer("unclear", reason=f"{rules.reason}+model-{verdict}")
