"""A generated FAQ corpus of paraphrase groups: the embedded default for `make demo`.

This corpus is GENERATED, not collected. A group is one (item, intent) question, e.g. (冰箱,
price); its sentences are that question phrased with different templates of the intent
("冰箱多少钱", "买一台冰箱要花多少钱", "冰箱怎么卖"), with optional politeness prefixes and
endings. So within a group the wording varies and the content is fixed, while across groups the
content varies and the wording repeats: an encoder must learn that "多少钱" and "怎么卖" mean
the same and that the item matters, which is the seed's task in miniature. Every item and
every intent occurs in training groups, but the held-out groups are unseen (item, intent)
combinations, so evaluation stays open-set as in docs/sentence_similarity.md §5.
"""

import numpy as np

ITEMS = (
    "沙发", "冰箱", "洗衣机", "空调", "手机", "电脑", "电视", "相机", "耳机", "床垫",
    "热水器", "自行车", "电动车", "钢琴", "书桌", "油烟机", "路由器", "打印机", "显示器",
    "键盘", "信用卡", "花呗", "借呗", "护照", "驾照", "身份证", "社保卡", "公积金",
    "会员卡", "宽带", "车险", "房贷", "快递", "机票", "火车票", "门票", "学生证", "医保",
    "电费", "水费", "燃气费", "话费", "优惠券", "积分", "外卖订单", "网店", "微信", "支付宝",
)

# intent -> templates; {x} is the item. Different templates of one intent share no key word
# on purpose, so matching them has to be learnt.
INTENTS = {
    "price": ("{x}多少钱", "{x}的价格是多少", "买{x}要花多少钱", "{x}怎么卖",
              "{x}一般什么价位", "{x}贵不贵"),
    "size": ("{x}一般有多大", "{x}的尺寸是多少", "{x}大概多高多宽", "{x}占多大地方",
             "{x}的规格是什么"),
    "open": ("怎么开通{x}", "{x}在哪里开通", "开通{x}的步骤是什么", "我想开{x}怎么弄",
             "{x}如何激活"),
    "cancel": ("怎么取消{x}", "{x}可以注销吗", "不想要{x}了怎么关掉", "{x}如何停用",
               "把{x}解绑要怎么做"),
    "refund": ("{x}怎么退款", "{x}的钱能退回来吗", "{x}退费要多久", "申请{x}退款的流程",
               "{x}不满意可以退吗"),
    "where": ("{x}在哪里办理", "去哪里办{x}", "{x}的办理地点在哪", "附近哪里能办{x}",
              "{x}要到什么地方去办"),
    "documents": ("办{x}需要什么材料", "{x}要带哪些证件", "申请{x}准备什么资料",
                  "{x}需要提交什么", "{x}的所需材料有哪些"),
    "expiry": ("{x}的有效期是多久", "{x}多长时间过期", "{x}能用几年", "{x}什么时候到期",
               "{x}过期了还能用吗"),
    "broken": ("{x}坏了怎么办", "{x}出故障了找谁修", "{x}不能用了怎么处理", "{x}维修电话是多少",
               "{x}有问题去哪里修"),
    "lost": ("{x}丢了怎么办", "{x}找不到了怎么补办", "{x}遗失了如何挂失", "不小心把{x}弄丢了",
             "{x}被偷了怎么处理"),
    "change": ("{x}能换成别的吗", "怎么更换{x}", "{x}可以调换吗", "想换一个{x}怎么办",
               "{x}更换流程是什么"),
    "pay": ("{x}怎么付款", "{x}用什么方式支付", "{x}可以分期吗", "{x}能刷卡吗",
            "{x}支持哪些付款方式"),
    "choose": ("{x}哪个牌子好", "买什么样的{x}比较好", "{x}怎么挑选", "推荐一款好用的{x}",
               "选{x}要注意什么"),
    "time": ("{x}要多久才能办好", "{x}几天能到", "{x}需要等多长时间", "{x}什么时候能好",
             "{x}的办理周期多长"),
    "limit": ("{x}的额度是多少", "{x}最多能用多少", "{x}有没有上限", "怎么提高{x}的额度",
              "{x}的限额怎么算"),
    "safe": ("{x}安全吗", "用{x}靠谱吗", "{x}会不会有风险", "{x}可信吗", "{x}有没有隐患"),
}

PREFIXES = ("", "", "", "请问", "你好，", "我想问一下", "问下")
SUFFIXES = ("", "", "？", "?", "呢", "啊")


def generate(num_items: int = len(ITEMS), sentences_per_group: tuple[int, int] = (3, 6),
             seed: int = 0) -> list[tuple[int, str]]:
    """The corpus as (group_id, sentence) rows, group ids 0.. in a shuffled group order.

    Args:
      num_items: how many of `ITEMS` to use (groups = num_items × len(INTENTS)).
      sentences_per_group: inclusive range of sentences per group.
      seed: generator seed (the same seed gives the same corpus).
    """
    rng = np.random.default_rng(seed)
    pairs = [(item, intent) for item in ITEMS[:num_items] for intent in INTENTS]
    order = rng.permutation(len(pairs))
    rows = []
    for group_id, index in enumerate(order):
        item, intent = pairs[index]
        templates = INTENTS[intent]
        count = int(rng.integers(sentences_per_group[0], sentences_per_group[1] + 1))
        chosen = rng.choice(len(templates), size=min(count, len(templates)), replace=False)
        seen = set()
        for template_index in chosen:
            sentence = (PREFIXES[rng.integers(len(PREFIXES))]
                        + templates[template_index].format(x=item)
                        + SUFFIXES[rng.integers(len(SUFFIXES))])
            if sentence not in seen:
                seen.add(sentence)
                rows.append((group_id, sentence))
    return rows


def write(path, **kwargs) -> None:
    """Writes `generate(**kwargs)` as a `group_id<TAB>sentence` file."""
    with open(path, "w", encoding="utf-8") as stream:
        for group_id, sentence in generate(**kwargs):
            stream.write(f"{group_id}\t{sentence}\n")
