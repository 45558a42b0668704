"""``data`` group for the ``data_prep`` job: raw text in, filtered/deduplicated/packed dataset out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from orchestrator.config.base import Frozen
from orchestrator.config.data import DEMO_TASKS
from orchestrator.config.errors import require

INPUT_FORMATS = ("auto", "jsonl", "parquet", "hf")
OUTPUT_FORMATS = ("pretrain", "sft", "preference", "prompts")


@dataclass
class NormalizeConfig(Frozen):
    enabled: bool = True
    """Unicode normalisation of every text field (before any other step)."""
    form: str = "NFC"
    """Unicode normal form: NFC (default, canonical composition), NFKC, NFD or NFKD."""
    strip_control: bool = True
    """Drop control/format characters (C0/C1 except tab and newline, zero-width, BOM)."""
    collapse_whitespace: bool = True
    """Collapse runs of spaces/tabs to one space, trim line ends, at most one blank line in a row."""

    def __post_init__(self) -> None:
        require(self.form in ("NFC", "NFKC", "NFD", "NFKD"), "data.normalize.form", f"unknown {self.form!r}",
                "use NFC, NFKC, NFD or NFKD")


@dataclass
class LanguageConfig(Frozen):
    enabled: bool = False
    """Keep only documents identified as one of ``languages`` (stop-word profile identifier; off by
    default because the demo corpus and tests are English)."""
    languages: list[str] = field(default_factory=lambda: ["en"])
    """Languages to keep (ISO 639-1 codes among en, de, fr, es, it, nl, pt)."""
    min_score: float = 0.5
    """Minimum share of the best language among all stop-word hits (0-1)."""


@dataclass
class GopherQualityConfig(Frozen):
    """Gopher quality rules (Rae et al. 2021, Table A1); defaults are the published thresholds."""

    enabled: bool = True
    """Apply the Gopher quality rules."""
    min_doc_words: int = 50
    """Fewer non-punctuation words than this: removed."""
    max_doc_words: int = 100_000
    """More non-punctuation words than this: removed."""
    min_avg_word_length: float = 3.0
    """Mean word length (characters) below this: removed."""
    max_avg_word_length: float = 10.0
    """Mean word length (characters) above this: removed."""
    max_symbol_word_ratio: float = 0.1
    """'#' per word, or ellipses ('...'/'…') per word, above this: removed."""
    max_bullet_lines_ratio: float = 0.9
    """Share of lines starting with a bullet above this: removed."""
    max_ellipsis_lines_ratio: float = 0.3
    """Share of lines ending with an ellipsis above this: removed."""
    min_alpha_words_ratio: float = 0.8
    """Share of words with at least one alphabetic character below this: removed."""
    min_stop_words: int = 2
    """Fewer occurrences of the stop words (the, be, to, of, and, that, have, with): removed."""
    skip_blank_lines: bool = True
    """Blank lines are not counted as lines by the bullet and ellipsis line shares (paragraph
    separators would otherwise dilute them: "• a\\n\\n• b" is 100 % bullets, not 67 %). Default true
    for the same reason as ``data.fineweb.skip_blank_lines`` (issue #19); false = every line of
    ``str.splitlines`` (datatrove's Gopher quality filter)."""


@dataclass
class GopherRepetitionConfig(Frozen):
    """Gopher repetition rules (Rae et al. 2021, Table A1); defaults are the published thresholds."""

    enabled: bool = True
    """Apply the Gopher repetition rules."""
    dup_line_frac: float = 0.3
    """Share of lines that repeat an earlier line above this: removed."""
    dup_para_frac: float = 0.3
    """Share of paragraphs (split on blank lines) that repeat an earlier one above this: removed."""
    dup_line_char_frac: float = 0.2
    """Characters in repeated lines / all characters above this: removed."""
    dup_para_char_frac: float = 0.2
    """Characters in repeated paragraphs / all characters above this: removed."""
    top_ngram_sizes: list[int] = field(default_factory=lambda: [2, 3, 4])
    """n of the 'top n-gram character fraction' rules."""
    top_ngram_max_fracs: list[float] = field(default_factory=lambda: [0.20, 0.18, 0.16])
    """Characters covered by the most frequent n-gram / all characters above this: removed."""
    dup_ngram_sizes: list[int] = field(default_factory=lambda: [5, 6, 7, 8, 9, 10])
    """n of the 'duplicate n-gram character fraction' rules."""
    dup_ngram_max_fracs: list[float] = field(default_factory=lambda: [0.15, 0.14, 0.13, 0.12, 0.11, 0.10])
    """Characters in repeated n-grams / all characters above this: removed."""

    def __post_init__(self) -> None:
        require(len(self.top_ngram_sizes) == len(self.top_ngram_max_fracs), "data.gopher_repetition.top_ngram_max_fracs",
                "needs one threshold per entry of top_ngram_sizes", "give lists of equal length")
        require(len(self.dup_ngram_sizes) == len(self.dup_ngram_max_fracs), "data.gopher_repetition.dup_ngram_max_fracs",
                "needs one threshold per entry of dup_ngram_sizes", "give lists of equal length")


@dataclass
class C4Config(Frozen):
    """C4 rules (Raffel et al. 2020 and the reference c4_utils); line rules drop lines, page rules drop
    the document."""

    enabled: bool = True
    """Apply the C4 rules."""
    filter_no_terminal_punct: bool = True
    """Drop lines not ending in terminal punctuation (. ! ? " ', or . ! ? followed by closing quotes
    or brackets such as .” ?’ !)) or ending in an ellipsis."""
    min_words_per_line: int = 3
    """Drop lines with fewer words."""
    max_word_length: int = 1000
    """Drop lines containing a longer word (characters)."""
    min_num_sentences: int = 5
    """Documents with fewer sentences in the kept lines are removed (-1 disables)."""
    remove_citations: bool = True
    """Strip Wikipedia-style citation markers ([1], [edit], [citation needed])."""
    filter_lorem_ipsum: bool = True
    """Remove documents containing 'lorem ipsum'."""
    filter_javascript: bool = True
    """Drop lines mentioning 'javascript'."""
    filter_curly_bracket: bool = True
    """Remove documents containing '{'."""
    filter_policy: bool = True
    """Drop lines with cookie/terms-of-use/privacy-policy boilerplate."""
    filter_bad_words: bool = True
    """Remove documents containing a word of the bad-words list."""
    bad_words_file: Optional[str] = None
    """One word or phrase per line; null = the short English list shipped with the project."""


@dataclass
class FineWebConfig(Frozen):
    """FineWeb's additional rules (Penedo et al. 2024); defaults are the published thresholds."""

    enabled: bool = True
    """Apply the FineWeb rules."""
    line_punct_thr: float = 0.12
    """Share of lines ending in punctuation at or below this: removed."""
    line_punct_exclude_zero: bool = False
    """Do not remove documents where no line ends in punctuation."""
    short_line_thr: float = 0.67
    """Share of short lines at or above this: removed."""
    short_line_length: int = 30
    """A line of at most this many characters is short."""
    char_duplicates_ratio: float = 0.01
    """Characters in repeated non-empty lines / characters at or above this: removed."""
    new_line_ratio: float = 0.3
    """Newlines per word above this (list-like pages): removed."""
    skip_blank_lines: bool = True
    """Blank lines are not lines for these rules: normalisation keeps one blank line between
    paragraphs, which would count as a short, unpunctuated line (~5 % extra removals on
    paragraph-structured text), and the newline ratio counts only breaks between non-blank lines.
    Default true: the bias found comparing against datatrove in issue #19 (datatrove >= 0.10 drops
    blank lines here, older releases did not); false = every ``\\n``-separated line, as the paper's code."""


DECONT_TEXT_FIELDS = ["text", "question", "prompt", "problem", "context", "passage", "query", "answer",
                      "solution", "canonical_solution", "choices", "endings"]


@dataclass
class DecontaminateConfig(Frozen):
    """Remove documents that share a word n-gram with evaluation text (step ``decontaminate``, after the
    quality filters and before PII scrubbing, every output format)."""

    enabled: bool = True
    """Apply decontamination when ``paths`` is non-empty (false switches it off and keeps the paths)."""
    paths: list[str] = field(default_factory=list)
    """Evaluation sets: JSONL(.gz/.zst) or Parquet files, globs, or local Hugging Face ``datasets``
    directories. The benchmark recorded for a removal is the file name without its extensions, or the
    directory name. Default empty: no evaluation set ships with the project, so the step is off."""
    text_fields: list[str] = field(default_factory=lambda: list(DECONT_TEXT_FIELDS))
    """Record fields holding evaluation text (a string, or a list of strings such as MMLU's choices);
    absent fields are skipped. Default: the question/passage/answer fields of common evaluation sets
    (MMLU question/choices, GSM8K question/answer, HumanEval prompt/canonical_solution, SQuAD
    context/question, HellaSwag endings, MATH problem/solution, plain ``text``)."""
    ngram: int = 13
    """Word n-gram length; a document sharing one n-gram with the evaluation text is removed. Default
    13, as GPT-3 (Brown et al. 2020, App. C; datatrove's NGramsDecontConfig defaults to 12). Evaluation
    texts shorter than this are not indexed (counted in the index metadata)."""

    def __post_init__(self) -> None:
        import glob

        require(self.ngram >= 4, "data.decontaminate.ngram", f"{self.ngram} words match common phrases",
                "use 8-13 (13 as GPT-3)")
        require(bool(self.text_fields), "data.decontaminate.text_fields", "is empty",
                "name the fields holding the evaluation text, e.g. [question, answer]")
        for p in self.paths:
            require(bool(glob.glob(p)), "data.decontaminate.paths", f"{p!r} matches no file",
                    "give existing JSONL/Parquet files, globs or Hugging Face datasets directories")


@dataclass
class PIIConfig(Frozen):
    enabled: bool = True
    """Replace personal data by placeholders (documents are kept)."""
    emails: bool = True
    """Scrub e-mail addresses."""
    ip_addresses: bool = True
    """Scrub IPv4 (and full IPv6) addresses; private/loopback ranges are scrubbed too."""
    phone_numbers: bool = True
    """Scrub phone numbers (international or North-American style, 7+ digits with separators)."""
    email_placeholder: str = "<EMAIL>"
    """Replacement of an e-mail address."""
    ip_placeholder: str = "<IP_ADDRESS>"
    """Replacement of an IP address."""
    phone_placeholder: str = "<PHONE>"
    """Replacement of a phone number."""


@dataclass
class ExactDedupConfig(Frozen):
    enabled: bool = True
    """Remove documents whose normalised text (case-folded, whitespace-collapsed) hashes equal an
    earlier document's; the first in input order is kept."""


@dataclass
class MinHashConfig(Frozen):
    enabled: bool = True
    """Near-duplicate removal with MinHash + LSH."""
    num_bands: int = 20
    """LSH bands b; P(candidate | Jaccard s) = 1 - (1 - s^r)^b. Default 20 x 6 (120 permutations):
    P(candidate) is 0.998 at Jaccard 0.8 and 0.994 at 0.78, so copies at the threshold are compared;
    datatrove's and FineWeb's 14 x 8 (112) reach only 0.92 at 0.8, i.e. 8 % of the copies right at
    the threshold are never compared (measured in issue #19). The extra candidates this admits
    (P = 0.27 at Jaccard 0.5) cost one exact verification each and are not removed."""
    rows_per_band: int = 6
    """Rows r per band; b*r hash permutations in all (20 x 6 = 120, ~0.61 Jaccard at P = 50 %)."""
    ngram: int = 5
    """Word n-gram size of the shingles."""
    threshold: float = 0.8
    """LSH candidate pairs are verified: duplicates only if their Jaccard similarity is >= this (0.8, as
    datatrove's and FineWeb's MinHash deduplication)."""
    verification: str = "jaccard"
    """How a candidate pair's similarity is measured. ``jaccard`` (default): the exact Jaccard of the
    two documents' shingle sets, which stage 1 writes to disk (8 bytes per distinct shingle, ~8 bytes
    per word of kept text) and the verify step reads back per candidate pair. ``estimate``: the share of
    equal signature entries, cheaper (no shingle files, no extra shuffle) but with a standard deviation
    of ~0.04 at Jaccard 0.8 with 112 hashes, so ~2 % of copies just above the threshold are missed and
    some just below are removed (measured in issue #19)."""
    seed: int = 42
    """Seed of the hash permutations (same seed = same signatures across runs)."""
    max_comparisons: int = 16
    """Per LSH bucket, each document is verified against at most this many earlier members."""
    max_iterations: int = 40
    """Upper bound on the large-star/small-star rounds of the distributed connected components."""

    def __post_init__(self) -> None:
        for name in ("num_bands", "rows_per_band", "ngram"):
            require(getattr(self, name) >= 1, f"data.minhash.{name}", "must be >= 1", "set a value >= 1")
        require(0 < self.threshold <= 1, "data.minhash.threshold", "must be in (0, 1]", "use e.g. 0.8")
        require(self.verification in ("jaccard", "estimate"), "data.minhash.verification",
                f"unknown {self.verification!r}", "use jaccard (exact, default) or estimate (signature)")


@dataclass
class DataPrepDataConfig(Frozen):
    input: Optional[str] = None
    """Path or glob of JSONL (.gz/.zst), Parquet, or a local HF datasets dir; null = generate the
    project's demo corpus (with planted duplicates and malformed lines) under the output dir."""
    input_format: str = "auto"
    """``auto`` (by extension), ``jsonl``, ``parquet`` or ``hf``."""
    format: str = "pretrain"
    """What to produce: ``pretrain`` (packed token blocks), ``sft``, ``preference`` or ``prompts``."""
    id_field: str = "id"
    """Record id field; generated (stable hash of file + line) when absent, always preserved."""
    text_field: str = "text"
    """Field holding the document text."""
    output: Optional[str] = None
    """Where to write the dataset; null = ``<output_dir>/dataset``."""
    seq_len: int = 64
    """Packed block length in tokens (the pipeline sets it to model.seq_len)."""
    vocab_size: int = 512
    """Vocabulary of the byte-level BPE tokenizer trained when ``tokenizer_path`` is null."""
    tokenizer_path: Optional[str] = None
    """Existing tokenizer directory to use instead of training one."""
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    """Step 1: Unicode normalisation."""
    language: LanguageConfig = field(default_factory=LanguageConfig)
    """Step 2: language filter (optional)."""
    gopher_quality: GopherQualityConfig = field(default_factory=GopherQualityConfig)
    """Step 3a: Gopher quality rules (pretrain format only)."""
    gopher_repetition: GopherRepetitionConfig = field(default_factory=GopherRepetitionConfig)
    """Step 3b: Gopher repetition rules (pretrain format only)."""
    c4: C4Config = field(default_factory=C4Config)
    """Step 3c: C4 rules (pretrain format only)."""
    fineweb: FineWebConfig = field(default_factory=FineWebConfig)
    """Step 3d: FineWeb rules (pretrain format only)."""
    decontaminate: DecontaminateConfig = field(default_factory=DecontaminateConfig)
    """Step 3e: decontamination against evaluation sets (off until ``paths`` is given)."""
    pii: PIIConfig = field(default_factory=PIIConfig)
    """Step 4: PII scrubbing."""
    exact_dedup: ExactDedupConfig = field(default_factory=ExactDedupConfig)
    """Step 5: exact dedup."""
    minhash: MinHashConfig = field(default_factory=MinHashConfig)
    """Step 6: near-duplicate detection settings."""
    prompt_field: str = "prompt"
    """Input field of the prompt (formats sft, preference, prompts)."""
    response_field: str = "response"
    """Input field of the response (format sft)."""
    chosen_field: str = "chosen"
    """Input field of the preferred response (format preference)."""
    rejected_field: str = "rejected"
    """Input field of the rejected response (format preference)."""
    messages_field: str = "messages"
    """Input field of a conversation, a list of ``{role, content}`` messages (roles system, user,
    assistant, tool; formats sft, prompts, and preference as the shared prompt). Records with it (or,
    for preference, with message-list ``chosen``/``rejected``) are written in chat form; the others use
    the flat fields above. "messages" is what OpenAI-style and Hugging Face chat datasets use."""
    chat_template: Optional[str] = None
    """Chat template the dataset's tokenizer carries when the data holds conversations (a Jinja string
    or a file path); null = the tokenizer's own template, else the ChatML-style default
    (``orchestrator.data.chat_template.DEFAULT_CHAT_TEMPLATE``, adding ``<|im_start|>``/``<|im_end|>``)."""
    partition_kb: int = 32768
    """Input partition size in KiB (default 32 MiB): uncompressed JSONL files are split into byte
    ranges of this size, one Ray task each (compressed files and Parquet row groups are one partition
    each). Stage-1 memory is bounded by a batch of documents, whatever the partition size."""
    shuffle_partitions: Optional[int] = None
    """Hash partitions (buckets) of every dedup shuffle; null = sized from the data so that one bucket
    holds about ``shuffle_partition_mb`` (the near-dedup shuffle moves one band row per band and
    document: ~56 bytes, or ~0.5 KB with ``minhash.verification=estimate``, which carries signatures)."""
    shuffle_partition_mb: int = 32
    """Target MiB of rows per dedup bucket when ``shuffle_partitions`` is null. One reduce task holds
    one bucket, so this bounds a task's memory: a larger corpus makes more buckets, not larger ones."""
    on_bad_file: str = "quarantine"
    """A damaged or unreadable input file (truncated .gz/.zst, corrupt Parquet/Arrow): ``quarantine``
    (default) keeps the records read before the damage, records the file in ``quarantine.jsonl``
    (path, error, records read) and in the stats (``bad_files``), and processes the other files;
    ``fail`` stops the run with one line naming the file (exit 2). Default quarantine: one damaged
    file in a crawl of thousands should not cost the run, as bad lines do not."""
    demo_num_docs: int = 600
    """Original documents of the generated demo corpus (data.input=null); duplicates, junk and
    malformed lines are added on top."""
    task: str = "fruit"
    """Which generated task the demo records of the post-training formats come from (``data.input=null``
    and ``format`` sft/preference/prompts): ``fruit`` (``orchestrator.data.task``) or ``arithmetic``
    (``orchestrator.data.arithmetic``: "compute 3+4:", operands 0-4, exact match on the final number)."""
    plots: bool = True
    """Log histograms of the filter statistics to MLflow (needs matplotlib)."""

    def __post_init__(self) -> None:
        require(self.input_format in INPUT_FORMATS, "data.input_format", f"unknown {self.input_format!r}",
                f"use one of {', '.join(INPUT_FORMATS)}")
        require(self.format in OUTPUT_FORMATS, "data.format", f"unknown {self.format!r}",
                f"use one of {', '.join(OUTPUT_FORMATS)}")
        require(self.seq_len >= 8, "data.seq_len", "must be >= 8", "use e.g. data.seq_len=64")
        require(self.partition_kb >= 1, "data.partition_kb", "must be >= 1", "use e.g. data.partition_kb=32768")
        require(self.shuffle_partitions is None or self.shuffle_partitions >= 1, "data.shuffle_partitions",
                "must be >= 1 or null", "leave it null to derive it from the corpus size")
        require(self.shuffle_partition_mb >= 1, "data.shuffle_partition_mb", "must be >= 1",
                "use e.g. data.shuffle_partition_mb=32")
        require(self.on_bad_file in ("quarantine", "fail"), "data.on_bad_file", f"unknown {self.on_bad_file!r}",
                "use quarantine or fail")
        require(self.task in DEMO_TASKS, "data.task", f"unknown generated task {self.task!r}",
                f"use one of {', '.join(DEMO_TASKS)}")
        require(self.demo_num_docs >= 10, "data.demo_num_docs", "must be >= 10", "use e.g. data.demo_num_docs=600")
        require(self.vocab_size >= 259, "data.vocab_size", "a byte-level BPE needs >= 259 entries",
                "use e.g. data.vocab_size=512")
