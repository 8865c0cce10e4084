"""A generated annotated corpus for entity linking, over any KB: the embedded default.

These texts are GENERATED, not collected: the competition's annotated `train.json` is not
public, so `make demo`, the tests and the per-stage statistics run on short query-like texts
written from a knowledge base (the real 801-entity CCKS2019 excerpt, or `EMBEDDED_KB` below)
by the rules here. They carry what makes the task hard in the post (kexue.fm/archives/6919):

* mentions in varied contexts: sentence templates chosen by the entity's kind (song, film or
  series, book, person, place, game) and by the predicate of one of its own facts, filled
  with that fact's value ("{o}唱的{m}", "{o}导演的{m}", "{m}的{p}是{o}", "《{m}》在线观看");
* same-name distractors: for an alias two entities share, texts about each of them whose
  fact is one the other's description lacks, so the right entity is decidable from context;
* NIL mentions: invented names and titles that are in no KB, and KB aliases in a sense no
  entity of that name has ("电视剧《邻居》" when 邻居 is only a word), annotated "NIL";
* the annotators' habits: dictionary words in the text that are not mentions. Common words
  of the KB (its `Vocabulary` entities) appear as ordinary words and are annotated only now
  and then; a fact value that is itself an entity name is annotated most of the time.

Everything is a pure function of the KB and the seed. `write_corpus` writes `train.json` and
`dev.json` (and `kb_data`) in the competition's format, which `kb.read_examples` reads back.
"""

import dataclasses
import pathlib
import random
import re
from collections.abc import Sequence

from experiments.entity_linking import kb

# --------------------------------------------------------------------------------------
# The embedded KB: a few dozen entities with same-name groups (苹果, 李娜, 长城, 黄河,
# 红楼梦, 七里香) and the common words of the post's example (下载, 在线, 观看, 高清, ...).

_E = kb.Entity
EMBEDDED_KB = (
    _E("1", "苹果", (), ("Plant",), (("义项描述", "蔷薇科苹果属植物的果实"), ("类型", "水果"),
                                    ("主要产地", "山东烟台"), ("颜色", "红色"))),
    _E("2", "苹果公司", ("苹果", "Apple"), ("Organization",),
       (("义项描述", "美国科技公司"), ("创始人", "史蒂夫·乔布斯"), ("总部地点", "库比蒂诺"),
        ("代表产品", "iPhone"))),
    _E("3", "李娜", (), ("Athlete",), (("义项描述", "中国女子网球运动员"), ("出生地", "湖北武汉"),
                                      ("主要成就", "法网女单冠军"), ("职业", "网球运动员"))),
    _E("4", "李娜", (), ("EntertainmentPerson",),
       (("义项描述", "中国内地女歌手"), ("代表作品", "青藏高原"), ("职业", "歌手"),
        ("出生地", "河南郑州"))),
    _E("5", "长城", ("万里长城",), ("Building",),
       (("义项描述", "中国古代军事防御工程"), ("所在地", "中国北方"), ("长度", "两万多公里"))),
    _E("6", "长城汽车", ("长城",), ("Organization",),
       (("义项描述", "中国汽车制造企业"), ("总部地点", "河北保定"), ("代表产品", "哈弗H6"))),
    _E("7", "黄河", (), ("Place",), (("义项描述", "中国第二长河"), ("发源地", "巴颜喀拉山"),
                                    ("注入", "渤海"))),
    _E("8", "黄河大合唱", ("黄河",), ("CreativeWork",),
       (("义项描述", "冼星海作曲的大合唱"), ("谱曲", "冼星海"), ("填词", "光未然"))),
    _E("9", "红楼梦", ("石头记",), ("CreativeWork",),
       (("义项描述", "中国古典长篇小说"), ("作者", "曹雪芹"), ("类型", "章回体小说"))),
    _E("10", "红楼梦", ("87版红楼梦",), ("TVPlay",),
       (("义项描述", "1987年版电视剧"), ("导演", "王扶林"), ("主演", "陈晓旭"),
        ("首播时间", "1987年"))),
    _E("11", "周杰伦", ("Jay Chou",), ("EntertainmentPerson",),
       (("职业", "歌手"), ("代表作品", "七里香"), ("出生地", "台湾新北"))),
    _E("12", "七里香", (), ("CreativeWork",),
       (("义项描述", "周杰伦演唱歌曲"), ("演唱者", "周杰伦"), ("所属专辑", "七里香"),
        ("发行时间", "2004年"))),
    _E("13", "七里香", ("千里香",), ("Plant",),
       (("义项描述", "芸香科植物"), ("花期", "4至8月"), ("类型", "灌木"))),
    _E("14", "西游记", (), ("CreativeWork",),
       (("义项描述", "中国古典神魔小说"), ("作者", "吴承恩"), ("类型", "章回体小说"))),
    _E("15", "孙悟空", ("美猴王", "齐天大圣"), ("FictionalHuman",),
       (("登场作品", "西游记"), ("兵器", "如意金箍棒"), ("师父", "唐僧"))),
    _E("16", "唐僧", ("唐三藏",), ("FictionalHuman",),
       (("登场作品", "西游记"), ("徒弟", "孙悟空"), ("坐骑", "白龙马"))),
    _E("17", "北京", ("北京市",), ("Place",),
       (("义项描述", "中华人民共和国首都"), ("别称", "燕京"), ("著名景点", "故宫"))),
    _E("18", "上海", ("上海市",), ("Place",),
       (("义项描述", "中国直辖市"), ("著名景点", "外滩"), ("别称", "申城"))),
    _E("19", "故宫", ("紫禁城", "故宫博物院"), ("Building",),
       (("义项描述", "明清两代的皇家宫殿"), ("所在地", "北京"), ("建成时间", "1420年"))),
    _E("20", "姚明", (), ("Athlete",),
       (("职业", "篮球运动员"), ("出生地", "上海"), ("效力球队", "休斯顿火箭"),
        ("身高", "226厘米"))),
    _E("21", "鲁迅", ("周树人",), ("Human",),
       (("职业", "作家"), ("代表作品", "狂人日记"), ("出生地", "浙江绍兴"))),
    _E("22", "狂人日记", (), ("CreativeWork",),
       (("义项描述", "鲁迅创作的短篇小说"), ("作者", "鲁迅"), ("发表时间", "1918年"))),
    _E("23", "英雄联盟", ("LOL",), ("Game",),
       (("义项描述", "多人在线竞技游戏"), ("开发商", "拳头公司"), ("游戏类型", "MOBA"))),
    _E("24", "王者荣耀", (), ("Game",),
       (("义项描述", "手机竞技游戏"), ("开发商", "天美工作室"), ("游戏平台", "手机"))),
    _E("25", "下载", (), ("Vocabulary",), (("解释", "从网络上获取文件"), ("拼音", "xià zài"))),
    _E("26", "在线", (), ("Vocabulary",), (("解释", "连接在网络上"), ("拼音", "zài xiàn"))),
    _E("27", "观看", (), ("Vocabulary",), (("解释", "特意地看"), ("拼音", "guān kàn"))),
    _E("28", "高清", (), ("Vocabulary",), (("解释", "高分辨率"), ("外文名", "HD"))),
    _E("29", "视频", (), ("Vocabulary",), (("解释", "连续的图像"), ("外文名", "video"))),
    _E("30", "图片", (), ("Vocabulary",), (("外文名", "picture"),)),
    _E("31", "歌词", (), ("Vocabulary",), (("解释", "歌曲中的文字部分"),)),
    _E("32", "电影", (), ("Vocabulary",), (("外文名", "film"), ("解释", "一种视听艺术"))),
    _E("33", "小说", (), ("Vocabulary",), (("外文名", "novel"), ("解释", "叙事性的文学体裁"))),
    _E("34", "历史", (), ("Vocabulary",), (("外文名", "history"),)),
    _E("35", "全集", (), ("Vocabulary",), (("解释", "全部作品的合集"),)),
    _E("36", "邻居", (), ("Vocabulary",), (("外文名", "neighbor"), ("拼音", "lín jū"))),
)

# --------------------------------------------------------------------------------------
# Kinds of entity ("senses"): how a text refers to one, and what marks an entity as one.

SENSE_PREDICATES = {
    "song": ("演唱者", "歌曲原唱", "所属专辑", "谱曲", "填词", "音乐时长", "歌曲时长"),
    "screen": ("导演", "主演", "上映时间", "片长", "首播时间", "集数", "出品公司"),
    "book": ("作者", "出版社", "出版时间", "ISBN", "发表时间"),
    "person": ("出生日期", "出生地", "职业", "国籍", "毕业院校", "民族"),
    "place": ("地理位置", "所在地", "人口", "面积", "行政区类别", "气候类型", "发源地"),
    "game": ("开发商", "游戏类型", "游戏平台"),
}
SENSE_TYPES = {
    "screen": ("Movie", "TVPlay", "TVShow"),
    "person": ("Human", "EntertainmentPerson", "Athlete", "HistoricalPerson", "FictionalHuman"),
    "place": ("Place",),
    "game": ("Game",),
}
# Templates with no fact: {m} is the mention.
SENSE_TEMPLATES = {
    "song": ("{m}歌词", "{m}这首歌是谁唱的", "歌曲{m}", "{m}mp3下载", "求{m}的伴奏"),
    "screen": ("《{m}》在线观看", "《{m}》全集", "{m}迅雷下载", "{m}第几集最好看",
               "《{m}》演员表"),
    "book": ("《{m}》免费阅读", "{m}txt下载", "《{m}》读后感", "{m}讲的是什么"),
    "person": ("{m}个人资料", "{m}是谁", "{m}的近况", "{m}图片"),
    "place": ("{m}旅游攻略", "{m}在哪里", "{m}天气", "去{m}怎么走"),
    "game": ("{m}攻略", "{m}怎么玩", "{m}官网", "《{m}》下载"),
    "": ("{m}是什么", "{m}百科", "什么是{m}", "{m}的资料"),
}
# Templates with one of the entity's facts: {p} its predicate, {o} its object.
FACT_TEMPLATES = {
    "演唱者": ("{o}唱的{m}", "{o}的{m}"), "歌曲原唱": ("{o}原唱的{m}", "{o}的{m}"),
    "所属专辑": ("{m}收录在{o}里",), "谱曲": ("{o}作曲的{m}",), "填词": ("{o}作词的{m}",),
    "导演": ("{o}导演的{m}",), "主演": ("{o}主演的{m}", "{m}里的{o}"),
    "作者": ("{o}写的{m}", "{o}的{m}"), "出版社": ("{o}出版的{m}",),
    "职业": ("{o}{m}", "{m}是{o}吗"), "出生地": ("{m}是{o}人吗", "{o}出生的{m}"),
    "国籍": ("{o}人{m}",), "代表作品": ("{m}的代表作{o}", "唱{o}的{m}"),
    "义项描述": ("{m}（{o}）", "{o}{m}", "{m}，{o}"), "开发商": ("{o}开发的{m}",),
    "所在地": ("{o}的{m}",), "登场作品": ("{o}里的{m}",),
}
GENERIC_FACT_TEMPLATES = ("{m}的{p}是{o}", "{m}{p}：{o}", "{p}为{o}的{m}", "{m}的{p}是不是{o}")
# Words that join two parts of a text.
SEPARATORS = ("，", " ", "-", "|", "、", "")
# Frames for a common word of the KB used as an ordinary word ({w}).
ORDINARY_FRAMES = ("{w}", "关于{w}", "{w}相关", "聊聊{w}", "{w}的故事", "说到{w}")
# Fixed query words, as CCKS texts have them (some are KB words in the embedded KB).
QUERY_WORDS = ("在线观看", "高清视频", "下载", "图片", "百度百科", "最新", "全集", "历史")

SURNAMES = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗梁宋郑谢韩唐冯于董萧程曹袁邓许傅沈"
GIVEN_CHARS = "伟芳敏静丽强磊洋勇艳杰娟涛明秀霞刚桂英华慧建玉兰志凤晨宇欣怡浩然梓涵子轩"
TITLE_PIECES = ("夜空", "星辰", "归途", "少年", "远方", "雨季", "旧梦", "长街", "微光", "海风",
                "山河", "故人", "灯火", "白昼", "春日", "迷城")
NIL_NAME_TEMPLATES = ("{m}是谁", "{m}的个人资料", "演员{m}", "{m}老师的电话", "{m}的微博")
NIL_TITLE_TEMPLATES = ("电影《{m}》在线观看", "电视剧《{m}》全集", "小说《{m}》免费阅读",
                       "歌曲《{m}》歌词")
# An alias used in a sense none of its entities has: (sense, templates).
NIL_SENSE_TEMPLATES = (
    ("screen", ("电视剧《{m}》全集", "电影《{m}》在线观看")),
    ("song", ("歌曲《{m}》的歌词", "{m}这首歌是谁唱的")),
    ("person", ("有个叫{m}的人", "网友{m}的微博")),
)

MAX_OBJECT_CHARS = 15
_CUT = re.compile(r"[，。；;、（(\n]")


@dataclasses.dataclass(frozen=True)
class Mix:
    """How often each kind of text is written, and the annotation habits.

    Attributes:
      single: one entity, with a fact template or a kind template.
      pair: two entities in one text.
      distractor: an entity sharing its alias with another, with a fact only it has.
      nil_name: an invented name or title (annotated NIL).
      nil_sense: a KB alias in a sense no entity of that name has (annotated NIL).
      ordinary: the chance that a text carries a common KB word as an ordinary word.
      annotate_ordinary: the chance that such an ordinary word is annotated all the same.
      query_word: the chance that a text ends with one of `QUERY_WORDS`.
      annotate_object: the chance that a fact value naming one KB entity is annotated.
      title_marks: the chance that a work's mention is written inside 《》.
      popularity_exponent: entity k of a random order is drawn with weight 1/k^exponent, so
        that many entities are seldom mentioned, as in the competition's texts.
      dormant: the chance that an entity sharing a name with a more popular one is (almost)
        never meant, as most of the post's 15 entities named 胜利 are: its weight is
        multiplied by `dormant_weight`.
    """

    single: float = 0.45
    pair: float = 0.15
    distractor: float = 0.2
    nil_name: float = 0.1
    nil_sense: float = 0.1
    ordinary: float = 0.5
    annotate_ordinary: float = 0.1
    query_word: float = 0.3
    annotate_object: float = 0.7
    title_marks: float = 0.5
    popularity_exponent: float = 1.5
    dormant: float = 0.5
    dormant_weight: float = 0.01


@dataclasses.dataclass(frozen=True)
class _Profile:
    """What the generator knows of one entity."""

    entity: kb.Entity
    names: tuple[str, ...]                # usable mention strings
    senses: frozenset[str]
    facts: tuple[tuple[str, str], ...]    # (predicate, short object)


def _short_object(value: str) -> str:
    return _CUT.split(value.strip(), 1)[0][:MAX_OBJECT_CHARS].strip()


def _senses(entity: kb.Entity) -> frozenset[str]:
    predicates = {p for p, _ in entity.facts}
    found = {sense for sense, marks in SENSE_PREDICATES.items() if predicates & set(marks)}
    found |= {sense for sense, types in SENSE_TYPES.items() if set(entity.types) & set(types)}
    if "person" in found and found & {"song", "screen", "book"}:
        found.discard("person")   # a work's facts name people (作者, 主演): it is no person
    return frozenset(found)


def _usable_name(name: str) -> bool:
    key = kb.normalize_alias(name)
    return 2 <= len(key) <= 12 and key == key.strip() and "\n" not in key


def _profile(entity: kb.Entity) -> _Profile:
    names = tuple(dict.fromkeys(name.strip("《》") for name in (entity.subject, *entity.aliases)
                                if _usable_name(name)))
    facts = []
    for predicate, value in entity.facts:
        short = _short_object(value)
        if predicate != "摘要" and 2 <= len(short) and predicate and short not in names:
            facts.append((predicate, short))
    return _Profile(entity, names, _senses(entity), tuple(dict.fromkeys(facts)))


class _Text:
    """A text under construction: its pieces and the annotations they carry."""

    def __init__(self):
        self.text, self.mentions = "", []

    def add(self, piece: str, kb_id: str | None = None) -> None:
        if kb_id is not None and piece:
            self.mentions.append(kb.Mention(piece, len(self.text), kb_id))
        self.text += piece


def _fill(out: _Text, template: str, slots: dict[str, tuple[str, str | None]]) -> None:
    """Writes `template`, each {slot} replaced by slots[slot] = (text, kb_id or None)."""
    for part in re.split(r"(\{\w\})", template):
        if part.startswith("{") and part.endswith("}"):
            out.add(*slots[part[1:-1]])
        else:
            out.add(part)


class _Writer:
    """Draws texts from one KB; every choice goes through `self.rng`."""

    def __init__(self, entities: Sequence[kb.Entity], mix: Mix, seed: int):
        self.rng, self.mix = random.Random(seed), mix
        self.index = kb.build_index(entities)
        self.profiles = {e.subject_id: _profile(e) for e in entities}
        self.shared = self._shared_aliases()
        self.own_facts = {(name, profile.entity.subject_id): own
                          for name, profile, own in self.shared}
        # The names each entity can be written with so that a reader can tell which entity
        # is meant: its own names, and shared ones for which it has a fact of its own.
        self.names = {i: [n for n in p.names if len(self.index.candidates(n)) == 1
                          or (n, i) in self.own_facts] for i, p in self.profiles.items()}
        self.named = [p for i, p in self.profiles.items()
                      if self.names[i] and "Vocabulary" not in p.entity.types]
        self.ordinary = [(name, p.entity.subject_id) for p in self.profiles.values()
                         if "Vocabulary" in p.entity.types for name in p.names[:1]]
        # Entities are not equally popular, so that many are seldom mentioned (and drop out
        # of the restricted candidate lists).
        ranks = list(range(1, len(self.profiles) + 1))
        self.rng.shuffle(ranks)
        self.popularity = {i: rank ** -mix.popularity_exponent
                           for i, rank in zip(self.profiles, ranks)}
        for ids in self.index.kb2id.values():
            for i in sorted(ids, key=self.popularity.get, reverse=True)[1:]:
                if self.rng.random() < mix.dormant:
                    self.popularity[i] *= mix.dormant_weight
        self.nil_senses = [(name, sense, templates)
                           for name in sorted({n for p in self.profiles.values()
                                               for n in p.names})
                           for sense, templates in NIL_SENSE_TEMPLATES
                           if not any(sense in self.profiles[i].senses
                                      for i in self.index.candidates(name))]

    def _shared_aliases(self) -> list[tuple[str, _Profile, tuple[tuple[str, str], ...]]]:
        """(alias, entity, facts no other entity of that alias has in its description)."""
        found = []
        for key, ids in self.index.kb2id.items():
            if len(ids) < 2:
                continue
            for subject_id in ids:
                profile = self.profiles[subject_id]
                name = next((n for n in profile.names if kb.normalize_alias(n) == key), None)
                rivals = [self.index.descriptions[i] for i in ids if i != subject_id]
                own = tuple((p, o) for p, o in profile.facts
                            if not any(kb.lower_same_length(o) in d for d in rivals))
                if name and own:
                    found.append((name, profile, own))
        return found

    # One part of a text about one entity -----------------------------------------------

    def _object_slot(self, value: str) -> tuple[str, str | None]:
        ids = self.index.candidates(value)
        if len(ids) == 1 and self.rng.random() < self.mix.annotate_object:
            return value, ids[0]
        return value, None

    def _popular(self, profiles: Sequence[_Profile], count: int = 1) -> list[_Profile]:
        weights = [self.popularity[p.entity.subject_id] for p in profiles]
        chosen: list[_Profile] = []
        while len(chosen) < count:
            pick = self.rng.choices(profiles, weights)[0]
            if pick not in chosen:
                chosen.append(pick)
        return chosen

    def entity_part(self, out: _Text, profile: _Profile) -> None:
        """A mention of `profile`'s entity in a kind template or with one of its facts.

        A name the entity shares with another is always written with a fact only it has
        (as in its distractor texts).
        """
        subject_id = profile.entity.subject_id
        mention = self.rng.choice(self.names[subject_id])
        self._write_entity(out, profile, mention, self.own_facts.get((mention, subject_id)))

    def distractor_part(self, out: _Text) -> None:
        """A shared alias, written with a fact that only the meant entity has."""
        weights = [self.popularity[p.entity.subject_id] for _, p, _ in self.shared]
        name, profile, own = self.rng.choices(self.shared, weights)[0]
        self._write_entity(out, profile, name, own)

    def _write_entity(self, out: _Text, profile: _Profile, mention: str,
                      own: Sequence[tuple[str, str]] | None) -> None:
        facts = profile.facts if own is None else own
        slots = {"m": (mention, profile.entity.subject_id)}
        if facts and (own is not None or self.rng.random() < 0.6):
            predicate, value = self.rng.choice(facts)
            templates = FACT_TEMPLATES.get(predicate, ()) + GENERIC_FACT_TEMPLATES
            slots |= {"p": (predicate, None), "o": self._object_slot(value)}
        else:
            sense = self.rng.choice(sorted(profile.senses) or [""])
            templates = SENSE_TEMPLATES[sense]
        template = self.rng.choice(templates)
        if "《{m}》" not in template and profile.senses & {"song", "screen", "book", "game"} \
                and self.rng.random() < self.mix.title_marks:
            template = template.replace("{m}", "《{m}》")
        _fill(out, template, slots)

    def nil_part(self, out: _Text, sense_of_alias: bool) -> None:
        """A NIL mention: a KB alias in a missing sense, or an invented name or title."""
        if sense_of_alias and self.nil_senses:
            name, _, templates = self.rng.choice(self.nil_senses)
            _fill(out, self.rng.choice(templates), {"m": (name, kb.NIL)})
            return
        for _ in range(100):
            if self.rng.random() < 0.5:
                name = self.rng.choice(SURNAMES) + "".join(
                    self.rng.choice(GIVEN_CHARS) for _ in range(self.rng.randint(1, 2)))
                templates = NIL_NAME_TEMPLATES
            else:
                name = "".join(self.rng.sample(TITLE_PIECES, 2))
                templates = NIL_TITLE_TEMPLATES
            if not self.index.candidates(name):
                _fill(out, self.rng.choice(templates), {"m": (name, kb.NIL)})
                return

    def ordinary_part(self, out: _Text) -> None:
        name, subject_id = self.rng.choice(self.ordinary)
        kb_id = subject_id if self.rng.random() < self.mix.annotate_ordinary else None
        _fill(out, self.rng.choice(ORDINARY_FRAMES), {"w": (name, kb_id)})

    # One whole text ---------------------------------------------------------------------

    def _kind(self) -> str:
        mix = self.mix
        weights = {"single": mix.single, "pair": mix.pair,
                   "distractor": mix.distractor if self.shared else 0.0,
                   "nil_name": mix.nil_name, "nil_sense": mix.nil_sense}
        return self.rng.choices(list(weights), list(weights.values()))[0]

    def text(self) -> _Text:
        out, kind = _Text(), self._kind()
        parts = []
        if kind == "single":
            profile, = self._popular(self.named)
            parts.append(lambda: self.entity_part(out, profile))
        elif kind == "pair":
            first, second = self._popular(self.named, 2)
            parts += [lambda: self.entity_part(out, first),
                      lambda: self.entity_part(out, second)]
        elif kind == "distractor":
            parts.append(lambda: self.distractor_part(out))
        else:
            parts.append(lambda: self.nil_part(out, kind == "nil_sense"))
        if self.ordinary and self.rng.random() < self.mix.ordinary:
            parts.insert(self.rng.randint(0, len(parts)), lambda: self.ordinary_part(out))
        for i, part in enumerate(parts):
            if i:
                out.add(self.rng.choice(SEPARATORS))
            part()
        if self.rng.random() < self.mix.query_word:
            out.add(self.rng.choice(SEPARATORS) + self.rng.choice(QUERY_WORDS))
        return out


def generate(entities: Sequence[kb.Entity], num_texts: int, *, seed: int = 0,
             mix: Mix = Mix(), first_id: int = 1) -> list[kb.Example]:
    """Annotated texts written from `entities`.

    Args:
      entities: the KB (e.g. `EMBEDDED_KB` or `kb.read_kb(path)[0]`); it needs at least two
        entities that are not common words (type `Vocabulary`) with a name of 2–12 chars.
      num_texts: how many texts.
      seed: the generator's seed: the same KB, count, mix and seed give the same texts.
      mix: the shares of each kind of text and the annotation habits.
      first_id: the text_id of the first text (ids count up from it).

    Returns:
      Examples whose mentions all satisfy text[offset:offset + len(mention)] == mention;
      NIL mentions carry kb_id "NIL".
    """
    writer = _Writer(entities, mix, seed)
    if len(writer.named) < 2:
        raise ValueError("the KB needs at least two nameable entities to write texts from")
    examples = []
    for i in range(num_texts):
        text = writer.text()
        examples.append(kb.Example(str(first_id + i), text.text, tuple(text.mentions)))
    return examples


def write_corpus(directory, entities: Sequence[kb.Entity], *, num_train: int = 4000,
                 num_dev: int = 500, seed: int = 0, mix: Mix = Mix(),
                 write_kb: bool = True) -> dict[str, pathlib.Path]:
    """Writes `train.json`, `dev.json` (and `kb_data`) under `directory`.

    The dev texts continue the same random stream after the training texts, with their own
    text ids. Returns the paths written, by name ("train", "dev", "kb").
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    examples = generate(entities, num_train + num_dev, seed=seed, mix=mix)
    paths = {"train": directory / "train.json", "dev": directory / "dev.json"}
    kb.write_jsonl(map(kb.example_record, examples[:num_train]), paths["train"])
    kb.write_jsonl(map(kb.example_record, examples[num_train:]), paths["dev"])
    if write_kb:
        paths["kb"] = directory / "kb_data"
        kb.write_jsonl(map(kb.entity_record, entities), paths["kb"])
    return paths
