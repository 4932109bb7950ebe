"""A shard database of realistic size for the store benchmark, generated once and cached.

One shard's `queue.sqlite3` with MESSAGES messages in CONVERSATIONS conversations of
ACCOUNTS accounts, skewed as real chats are: conversations get messages by a Zipf law
(a few very busy chats, a long tail) and accounts get conversations by a milder one;
a fifth of the chats are groups with several senders; inbound and outbound; a quarter
of the chats end with a few unread messages; bodies drawn from a Portuguese word list
with diacritics (Zipf over words, so search terms have very different frequencies);
one message in REACTED has reactions (one to three people's), so a page's reactions
lookup finds some.

Built fast but with the store's own schema: `ShardStore` opens the empty file once,
so the migrations create every table, index and trigger; then sqlite3 bulk-inserts
the rows in big transactions (journal off while generating, WAL again after), fills
the changes the real write path logs (each message, and its conversation), and the
full-text index with FTS5's 'rebuild' (its insert trigger is dropped for the bulk
insert and put back with its own SQL). The file is cached under
~/.cache/wasp/bench/, named by the generator's version, its parameters and a hash of
the schema the current code creates, so a schema change makes a new one.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import os
import random
import sqlite3
import tempfile
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from wasp_worker.message_ids import in_time_order
from wasp_worker.store import FILE, ShardStore

GENERATOR_VERSION = 3
SEED = 20260101
END = 1_767_225_600.0  # 2026-01-01 UTC: the newest message is just before it
SPAN_S = 365 * 86_400.0
CACHE = Path(os.environ.get("WASP_CACHE", Path.home() / ".cache" / "wasp")) / "bench"

# Common words first (Zipf makes them frequent), with diacritics for search.
WORDS_TEXT = (
    "de a o que e do da em um para é com não uma os no se na por mais as dos como mas "
    "foi ao ele das tem à seu sua ou ser quando muito há nos já está eu também só pelo "
    "pela até isso ela entre era depois sem mesmo aos ter seus quem nas me esse eles "
    "estão você tinha foram essa num nem suas meu às minha têm numa pelos elas havia "
    "seja qual será nós tenho lhe deles essas esses pelas este fosse dele tu te vocês "
    "vos lhes meus minhas teu tua teus tuas nosso nossa nossos nossas dela delas esta "
    "estes estas aquele aquela aqueles aquelas isto aquilo estou está estamos estão "
    "olá oi bom dia boa tarde noite obrigado obrigada por favor pedido entrega preço "
    "orçamento pagamento boleto pix cartão transferência nota fiscal endereço rua "
    "número cep cidade amanhã hoje ontem semana próxima mês horário reunião confirmação "
    "confirmado cancelado atenção informação dúvida problema solução atendimento "
    "técnico manutenção instalação devolução troca garantia produto serviço catálogo "
    "promoção desconto frete grátis prazo disponível estoque código rastreio correios "
    "retirada loja família criança coração saúde médico consulta exame farmácia "
    "remédio você poderia enviar mandar receber chegou chegará aguardo retorno "
    "ligação telefone contato cadastro documento cópia assinatura contrato proposta "
    "análise aprovação crédito cobrança juros vencimento parcela mensalidade acesso "
    "senha aplicativo site página formulário ótimo ótima excelente perfeito beleza "
    "tranquilo combinado certo claro verdade mentira música futebol jogo vitória "
    "São Paulo Brasília Belém Goiânia Maceió Florianópolis Niterói Ribeirão Preto"
)
SYLLABLES_TEXT = (
    "ba be bi bo bu ca ce ci co cu da de di do du fa fe fi fo ga gi go la le li lo lu "
    "ma me mi mo mu na ne ni no nu pa pe pi po pu ra re ri ro ru sa se si so su ta te "
    "ti to tu va ve vi vo ção ões ã é ê ó ô á í ú lha nho que gua"
)
FIRST_NAMES_TEXT = (
    "João José Antônio Francisco Conceição Luíza Márcia Sérgio Fábio Inês Cláudia "
    "Vitória Letícia Patrícia Júlia Mônica Tânia Caio Otávio Lúcia Íris Renê Zoé"
)
WORDS = WORDS_TEXT.split()
SYLLABLES = SYLLABLES_TEXT.split()
FIRST_NAMES = FIRST_NAMES_TEXT.split()
REACTED = 30  # one message in 30 has reactions
EMOJIS = ("👍", "❤️", "😂", "😮", "🙏")
TAGS = ("vip", "suporte", "vendas", "cobrança", "pós-venda")


@dataclass(frozen=True)
class Shape:
    """What to generate: `first_slot` numbers the accounts (A<first_slot>..)."""

    messages: int = 1_000_000
    conversations: int = 20_000
    accounts: int = 50
    first_slot: int = 1
    chat_zipf: float = 1.0
    account_zipf: float = 0.7
    word_zipf: float = 1.2
    rare_words: int = 8_000

    def name(self, schema: str) -> str:
        fields = (
            f"{self.messages}-{self.conversations}-{self.accounts}-{self.first_slot}-"
            f"{self.chat_zipf}-{self.account_zipf}-{self.word_zipf}-{self.rare_words}"
        )
        digest = hashlib.sha256(f"{GENERATOR_VERSION}|{fields}|{schema}".encode()).hexdigest()
        return f"store-g{GENERATOR_VERSION}-{self.messages}-{self.first_slot}-{digest[:12]}"


@dataclass(frozen=True)
class Built:
    path: Path
    generated_s: float | None  # how long generating it took (None: not known)
    from_cache: bool


def schema_sql() -> str:
    """Every table, index and trigger the current code creates, as SQL text."""
    with tempfile.TemporaryDirectory(prefix="wasp-bench-schema-") as tmp:
        ShardStore(Path(tmp) / FILE).close()
        with closing(sqlite3.connect(Path(tmp) / FILE)) as db:
            rows = db.execute(
                "SELECT type, name, sql FROM sqlite_master ORDER BY type, name"
            ).fetchall()
            version = db.execute("PRAGMA user_version").fetchone()[0]
    return f"version {version}\n" + "\n".join(f"{t} {n}: {s}" for t, n, s in rows)


def cached(shape: Shape) -> Built:
    """The database for `shape`: from the cache, or generated into it now."""
    path = CACHE / f"{shape.name(schema_sql())}.sqlite3"
    timing = path.with_suffix(".json")  # how long the generation took, for later runs
    if path.exists():
        known = json.loads(timing.read_text())["generated_s"] if timing.exists() else None
        return Built(path, known, from_cache=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    for leftover in CACHE.glob(partial.name + "*"):
        leftover.unlink()
    started = time.monotonic()
    generate(partial, shape)
    took = round(time.monotonic() - started, 1)
    timing.write_text(json.dumps({"generated_s": took}))
    partial.rename(path)  # complete files only: a run cut short leaves no cache entry
    return Built(path, took, from_cache=False)


def _zipf(count: int, s: float) -> list[float]:
    """Cumulative Zipf weights of ranks 1..count."""
    return list(itertools.accumulate(1 / (rank**s) for rank in range(1, count + 1)))


def _vocabulary(rng: random.Random, rare: int) -> list[str]:
    """The common words, then `rare` made-up words of 2 to 4 syllables (the long tail)."""
    made: dict[str, None] = {}
    while len(made) < rare:
        word = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
        if word not in WORDS:
            made[word] = None
    return [*dict.fromkeys(WORDS), *made]


@dataclass
class _Chat:
    slot: str
    chat_id: str
    group: bool
    peers: list[tuple[str, str]]  # (phone, push name)
    total: int = 0
    seen: int = 0
    unread_tail: int = 0
    unread: int = 0
    last_id: str | None = None
    last_ts: float | None = None
    name: str | None = None


def _chats(rng: random.Random, shape: Shape) -> list[_Chat]:
    """The conversations by busyness rank (0 busiest), each given an account."""
    account_weights = _zipf(shape.accounts, shape.account_zipf)
    slots = [f"A{shape.first_slot + n}" for n in range(shape.accounts)]
    chats = []
    for n in range(shape.conversations):
        slot = slots[bisect.bisect(account_weights, rng.random() * account_weights[-1])]
        group = rng.random() < 0.2
        size = min(2 + int(rng.paretovariate(1.2)), 200) if group else 1
        peers = [
            (f"55{rng.randint(11, 99)}9{rng.randint(10_000_000, 99_999_999)}", _person(rng))
            for _ in range(size)
        ]
        chat_id = (
            f"1203630{shape.first_slot:03d}{n:08d}@g.us"
            if group
            else f"{peers[0][0]}@s.whatsapp.net"
        )
        chats.append(_Chat(slot, chat_id, group, peers))
    return chats


def _person(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(FIRST_NAMES)}"


def _body(rng: random.Random, vocabulary: list[str], weights: list[float]) -> str:
    count = min(1 + int(rng.lognormvariate(1.7, 0.8)), 80)
    top = weights[-1]
    words = [vocabulary[bisect.bisect(weights, rng.random() * top)] for _ in range(count)]
    text = " ".join(words)
    return text[:1].upper() + text[1:] + rng.choice((".", "", "?", "!", " 🙂"))


_MESSAGE_COLUMNS = (
    "slot, wa_message_id, chat_id, direction, sender, push_name, body, media_type, "
    "media_url, timestamp, read, status, sender_jid, sender_phone_jid, sender_lid, "
    "from_me, message_type, media_mime, media_size, media_name"
)


def generate(path: Path, shape: Shape) -> None:
    """Write the database for `shape` at `path` (which must not exist)."""
    ShardStore(path).close()  # the migrations make the schema
    rng = random.Random(SEED + shape.first_slot)
    chats = _chats(rng, shape)
    chat_weights = _zipf(shape.conversations, shape.chat_zipf)
    top = chat_weights[-1]
    picks = [bisect.bisect(chat_weights, rng.random() * top) for _ in range(shape.messages)]
    for pick in picks:
        chats[pick].total += 1
    for chat in chats:
        if rng.random() < 0.25:  # these end with a few messages not yet read
            chat.unread_tail = min(chat.total, 1 + int(rng.expovariate(1 / 4)))
    vocabulary = _vocabulary(rng, shape.rare_words)
    word_weights = _zipf(len(vocabulary), shape.word_zipf)
    times = sorted(END - rng.random() * SPAN_S for _ in range(shape.messages))
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode=DELETE")
        db.execute("PRAGMA journal_mode=OFF")  # a file we generate again if cut short
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA cache_size=-262144")
        trigger = db.execute(
            "SELECT sql FROM sqlite_master WHERE name='messages_fts_insert'"
        ).fetchone()[0]
        db.execute("DROP TRIGGER messages_fts_insert")
        db.execute("BEGIN")
        rows: list[tuple[object, ...]] = []
        changes: list[tuple[str, str, str]] = []
        reactions: list[tuple[object, ...]] = []
        reacting = random.Random(SEED * 7 + shape.first_slot)  # the messages' draws unchanged
        # Ids as the store gives them (time-ordered: `message_ids`), the times being sorted.
        ids = in_time_order((at, n) for n, at in enumerate(times))
        for n, (pick, at, (message_id, _)) in enumerate(zip(picks, times, ids, strict=True)):
            chat = chats[pick]
            rows.append((message_id, *_message(rng, chat, n, at, vocabulary, word_weights)))
            changes.append((chat.slot, "message", str(rows[-1][2])))
            changes.append((chat.slot, "conversation", chat.chat_id))
            if reacting.random() < 1 / REACTED:
                reactions += _reactions(reacting, chat, str(rows[-1][2]), at)
            if len(rows) == 50_000:
                _flush(db, rows, changes, reactions)
        _flush(db, rows, changes, reactions)
        _conversations(db, rng, chats)
        _contacts(db, chats)
        db.execute("COMMIT")
        db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')")
        db.execute(trigger)
        db.execute("ANALYZE")
        db.execute("PRAGMA journal_mode=WAL")  # as the worker keeps it


def _message(
    rng: random.Random,
    chat: _Chat,
    n: int,
    at: float,
    vocabulary: list[str],
    word_weights: list[float],
) -> tuple[object, ...]:
    position = chat.seen
    chat.seen += 1
    inbound = rng.random() < 0.55
    wa_id = f"3EB0{n:016X}"
    media = rng.random() < 0.06
    body = "" if media and rng.random() < 0.5 else _body(rng, vocabulary, word_weights)
    unread = inbound and position >= chat.total - chat.unread_tail
    chat.unread += unread
    chat.last_id, chat.last_ts = wa_id, at
    if inbound:
        phone, push = rng.choice(chat.peers)
        if not chat.group:
            chat.name = push
        jid = f"{phone}@s.whatsapp.net"
        sender: tuple[object, ...] = (phone, push, jid, jid, f"{phone[::-1]}@lid", 0)
        status = None
    else:
        sender = (chat.slot, None, None, None, None, 1)
        status = "read" if at < END - 86_400 else rng.choice(("sent", "delivered", "read"))
    kind = rng.choice(("image", "image", "audio", "document", "video")) if media else None
    return (
        chat.slot,
        wa_id,
        chat.chat_id,
        "in" if inbound else "out",
        sender[0],
        sender[1],
        body,
        kind,
        f"/api/accounts/{chat.slot}/media/{wa_id}.bin" if media else None,
        at,
        0 if unread else 1,
        status,
        sender[2],
        sender[3],
        sender[4],
        sender[5],
        kind or "text",
        "image/jpeg" if kind == "image" else None,
        rng.randint(10_000, 5_000_000) if media else None,
        None,
    )


def _reactions(rng: random.Random, chat: _Chat, wa_id: str, at: float) -> list[tuple[object, ...]]:
    """One to three reactions to a message, by the chat's peers or the account itself."""
    people = [(f"{phone}@s.whatsapp.net", 0) for phone, _ in chat.peers] + [(chat.slot, 1)]
    chosen = rng.sample(people, min(len(people), rng.randint(1, 3)))
    return [
        (chat.slot, chat.chat_id, wa_id, reactor, rng.choice(EMOJIS), mine, at + 60 * (k + 1))
        for k, (reactor, mine) in enumerate(chosen)
    ]


def _flush(
    db: sqlite3.Connection,
    rows: list[tuple[object, ...]],
    changes: list[tuple[str, str, str]],
    reactions: list[tuple[object, ...]],
) -> None:
    db.executemany(
        f"INSERT INTO messages (id, {_MESSAGE_COLUMNS}) VALUES ({', '.join('?' * 21)})", rows
    )
    db.executemany("INSERT INTO changes (slot, kind, key) VALUES (?, ?, ?)", changes)
    db.executemany(
        "INSERT INTO reactions (slot, chat_id, wa_message_id, reactor, emoji, from_me, "
        "timestamp) VALUES (?, ?, ?, ?, ?, ?, ?)",
        reactions,
    )
    rows.clear()
    changes.clear()
    reactions.clear()


def _conversations(db: sqlite3.Connection, rng: random.Random, chats: list[_Chat]) -> None:
    """Oldest activity first (a conversation row is made when its chat first has a message)."""
    used = [chat for chat in chats if chat.total]
    db.executemany(
        "INSERT INTO conversations (slot, chat_id, chat_type, name, last_message_id, "
        "last_timestamp, unread, pinned, archived, tags) VALUES (?,?,?,?,?,?,?,?,?,?)",
        [
            (
                chat.slot,
                chat.chat_id,
                "group" if chat.group else "direct",
                chat.name,
                chat.last_id,
                chat.last_ts,
                chat.unread,
                int(rng.random() < 0.02),
                int(rng.random() < 0.1),
                "[" + ",".join(f'"{t}"' for t in rng.sample(TAGS, rng.randint(0, 2))) + "]",
            )
            for chat in sorted(used, key=lambda c: c.last_ts or 0)
        ],
    )


def _contacts(db: sqlite3.Connection, chats: list[_Chat]) -> None:
    seen: dict[tuple[str, str], tuple[object, ...]] = {}
    for chat in chats:
        if chat.total:
            for phone, push in chat.peers:
                jid = f"{phone}@s.whatsapp.net"
                seen[(chat.slot, jid)] = (chat.slot, jid, jid, f"{phone[::-1]}@lid", push, END)
    db.executemany(
        "INSERT INTO contacts (slot, jid, phone_jid, lid, push_name, updated_at) "
        "VALUES (?,?,?,?,?,?)",
        seen.values(),
    )
