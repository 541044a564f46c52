"""Learn sequence merges on top of Llama-3's own pieces and write them into a standard tokenizer.json."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import combinations, islice, product
from pathlib import Path
from string import ascii_uppercase

from transformers import PreTrainedTokenizerBase

from omics.data.validate import DataReport, read_sequences
from omics.sequences import Molecule

# merges learned per group: nucleic acids share theirs (RNA is DNA with U), proteins have their own
GROUPS: dict[str, tuple[Molecule, ...]] = {"dna": ("dna", "rna"), "protein": ("protein",)}
PIECE = 4096  # residues per sampled piece: a Stage 1 window's worth; bounds the longest BPE "word"
HELDOUT_FRACTION = 0.1  # sampled pieces kept out of learning, to measure the vocabulary honestly
ENCODE_BATCH = 256
PRIVATE_USE = 0xF0000  # one character per Llama piece for the BPE trainer (Unicode plane 15: never in the data)
SHORT_WORDS = 3  # every all-capitals word up to this many letters is protected (26 + 676 + 17,576 words)
# all-capitals words of biology prose longer than SHORT_WORDS whose tokens must not change (checked by the tests)
_WORDS = (
    "DNA RNA ATP ADP AMP GTP GDP NAD NADH NADP NADPH FAD FADH PCR QPCR RT CRISPR CAS BRCA BRCA1 TP53 MRNA TRNA "
    "RRNA SNP "
    "SNPS GWAS ORF ORFS UTR CDS EST GC AT CPG TATA GATA CAAT CAGE HIV SARS COVID MERS HPV EBV HBV HCV ELISA FACS "
    "SDS PAGE HPLC NMR MRI CT PET EEG ECG ICU FDA NIH WHO USA UK EU MHC HLA TCR BCR IGG IGM IGA IGE IL TNF IFN "
    "EGFR HER KRAS BRAF MYC TP53 PTEN APC RB VEGF PDGF FGF TGF BMP WNT SHH NOTCH JAK STAT MAPK ERK PI3K AKT MTOR "
    "AMPK NF HIF P53 GFP RFP YFP CFP LUC GAL LACZ GST HIS FLAG HA MYC LTR SINE LINE ALU ERV MIRNA SIRNA SHRNA "
    "LNCRNA CIRCRNA PIRNA SNORNA SNRNA CHIP SEQ ATAC HIC RNASEQ SCRNA WGS WES NGS ONT PACBIO BLAST BLOSUM PAM "
    "PDB GO KEGG OMIM NCBI EMBL UNIPROT ENSEMBL HGNC ACMG VUS LOF GOF NMD UPR ER ROS DMSO EDTA TRIS HEPES PBS "
    "BSA FBS DMEM LB OD UV IR MS LC GC TOF MALDI ESI ATCC CHO HEK HELA IPSC ESC MSC NK DC CAR CART AML ALL CLL "
    "CML NSCLC HCC CRC TNBC ER PR OK AI ML NLP API CPU GPU HTML JSON CSV TSV PDF FASTA FASTQ BAM SAM VCF BED GFF "
    "GTF THE AND FOR NOT BUT THIS THAT WITH FROM HAVE WILL WHAT WHEN WHERE WHICH NOTE TODO WARNING ERROR"
)
PROTECTED_WORDS = tuple(sorted({word for word in _WORDS.split() if len(word) > SHORT_WORDS}))
WORD_PREFIXES = ("", " ", "(", "-", "/", '"', "'", "[", "\n")  # how a word starts a pre-tokenizer chunk


@dataclass
class SequenceSample:
    """The sequences a vocabulary is learned and measured on, and what the whole file holds."""

    learn: dict[str, list[str]] = field(default_factory=lambda: {group: [] for group in GROUPS})
    heldout: dict[Molecule, list[str]] = field(default_factory=dict)
    file_residues: Counter = field(default_factory=Counter)
    sampled_residues: Counter = field(default_factory=Counter)
    rate: float = 1.0


def group_of(molecule: Molecule) -> str:
    return next(group for group, members in GROUPS.items() if molecule in members)


def sample_sequences(path: Path, sample_bytes: int, seed: int = 0) -> tuple[SequenceSample, DataReport]:
    """One streaming pass: each PIECE-residue piece is kept with the probability that keeps about
    `sample_bytes` of the file, and a tenth of those is held out."""
    sample = SequenceSample(rate=min(1.0, sample_bytes / max(path.stat().st_size, 1)))
    rng = random.Random(seed)
    report = DataReport(str(path))
    for sequence, molecule in read_sequences(path, report):
        sample.file_residues[molecule] += len(sequence)
        for start in range(0, len(sequence), PIECE):
            if rng.random() >= sample.rate:
                continue
            piece = sequence[start:start + PIECE]
            sample.sampled_residues[molecule] += len(piece)
            if rng.random() < HELDOUT_FRACTION:
                sample.heldout.setdefault(molecule, []).append(piece)
            else:
                sample.learn[group_of(molecule)].append(piece)
    return sample, report


def encode(tokenizer: PreTrainedTokenizerBase, texts: Iterable[str]) -> Iterator[list[int]]:
    """Token ids of each text, as Stage 1 reads a sequence line (no BOS), a batch at a time."""
    texts = iter(texts)
    while batch := list(islice(texts, ENCODE_BATCH)):
        yield from tokenizer(batch, add_special_tokens=False)["input_ids"]


def words_containing(text: str, letters: int) -> list[str]:
    """Every all-capitals word of `len(text)` to `letters` letters with `text` inside it (none unless `text` is
    all capitals A-Z)."""
    if not (text.isascii() and text.isalpha() and text.isupper()):
        return []
    found = {text} if len(text) <= letters else set()
    for extra in range(1, letters - len(text) + 1):
        for filler in product(ascii_uppercase, repeat=extra):
            fill = "".join(filler)
            found.update(fill[:cut] + text + fill[cut:] for cut in range(extra + 1))
    return sorted(found)


class TextGuard:
    """Keeps the tokens of the protected words (every all-capitals word up to SHORT_WORDS letters and the
    PROTECTED_WORDS, however they start a chunk: WORD_PREFIXES) as they are.

    A merge of (left, right) can only fire in a pre-tokenizer chunk whose text contains left + right, and it
    fires there only if the chunk's tokens, all original while no merge fired on it, hold left, right side by
    side. So the few protected chunks containing a merge's text are all that needs checking; refusing the merges
    that would fire on one (or whose token is one whole chunk, which a tokenizer with `ignore_merges` reads
    whole) keeps every protected chunk's ids.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer = tokenizer
        self.by_part: dict[str, set[str]] = {}  # every substring of a listed word's chunks → those chunks
        for word in PROTECTED_WORDS:
            for chunk in (prefix + word for prefix in WORD_PREFIXES):
                for start, end in combinations(range(len(chunk) + 1), 2):
                    self.by_part.setdefault(chunk[start:end], set()).add(chunk)
        self.tokens: dict[str, list[str]] = {}
        self.size = len(WORD_PREFIXES) * (sum(26**n for n in range(1, SHORT_WORDS + 1)) + len(PROTECTED_WORDS))

    def chunks_containing(self, text: str) -> set[str]:
        short = words_containing(text, SHORT_WORDS)
        return self.by_part.get(text, set()) | {prefix + word for word in short for prefix in WORD_PREFIXES}

    def allows(self, left: str, right: str) -> bool:
        """Whether appending the merge (left, right) leaves every protected chunk's ids unchanged."""
        text = self.tokenizer.convert_tokens_to_string([left + right])
        chunks = sorted(self.chunks_containing(text) - self.tokens.keys())
        for chunk, encoding in zip(chunks, self.tokenizer.backend_tokenizer.encode_batch(
                chunks, add_special_tokens=False), strict=True):
            self.tokens[chunk] = encoding.tokens
        pre_tokenize = self.tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str
        for chunk in self.chunks_containing(text):
            tokens = self.tokens[chunk]
            if (left, right) in zip(tokens, tokens[1:], strict=False) or any(
                    piece == left + right for piece, _ in pre_tokenize(chunk)):
                return False
        return True


def learn_merges(tokenizer: PreTrainedTokenizerBase, sequences: list[str], new_tokens: int,
                 guard: TextGuard) -> list[tuple[str, str]]:
    """BPE merges over Llama-3's pieces of `sequences`, most frequent first, that add `new_tokens` tokens to
    the vocabulary (fewer when the data runs out of pairs seen twice), each one the `guard` allows."""
    from tokenizers import Tokenizer, models, trainers

    if new_tokens <= 0 or not sequences:
        return []
    char_of: dict[int, str] = {}  # each Llama piece's character, in order of appearance
    words = ["".join(char_of.setdefault(i, chr(PRIVATE_USE + len(char_of))) for i in ids)
             for ids in encode(tokenizer, sequences)]  # a character per piece: ~1 byte per residue held, not ids
    token_of = dict(zip(char_of.values(), tokenizer.convert_ids_to_tokens(list(char_of)), strict=True))
    vocabulary = tokenizer.get_vocab()
    budget = 2 * new_tokens + 256  # merges refused, or making a token the vocabulary has, need replacing
    while True:
        trainer = trainers.BpeTrainer(vocab_size=len(char_of) + budget, min_frequency=2, show_progress=False,
                                      initial_alphabet=list(char_of.values()))
        bpe = Tokenizer(models.BPE())
        bpe.train_from_iterator(words, trainer)
        learned = json.loads(bpe.to_str())["model"]["merges"]
        merges, added = _kept(learned, token_of, vocabulary, new_tokens, guard)
        if added == new_tokens or len(learned) < budget:  # enough, or no pair left seen twice
            return merges
        budget *= 2


def _kept(learned: list, token_of: dict[str, str], vocabulary: dict[str, int], new_tokens: int, guard: TextGuard
          ) -> tuple[list[tuple[str, str]], int]:
    """The trainer's merges as Llama token strings, in order, up to `new_tokens` new tokens, without those the
    guard refuses (nor the later ones that build on a refused one)."""
    reachable = set(token_of.values())
    merges: list[tuple[str, str]] = []
    added = 0
    for merge in learned:
        left, right = ("".join(token_of[c] for c in part) for part in (merge.split(" ") if isinstance(merge, str)
                                                                        else merge))
        if left not in reachable or right not in reachable or not guard.allows(left, right):
            continue
        merges.append((left, right))
        reachable.add(left + right)
        added += left + right not in vocabulary
        if added == new_tokens:
            break
    return merges, added


def extend_spec(spec: dict, merges: list[tuple[str, str]]) -> tuple[dict, dict[str, int]]:
    """tokenizer.json with `merges` appended (after every original merge) and their new tokens given ids after
    the last special token; returns it and the new tokens' ids.

    The special tokens are written into the BPE vocabulary too, at their ids: the tokenizers library gives an
    added token the id the model's vocabulary has for it, and otherwise the next free one, which with new
    tokens after 128,255 would move every special token.
    """
    spec = json.loads(json.dumps(spec))  # a deep copy
    model = spec["model"]
    vocab = model["vocab"]
    vocab.update({token["content"]: token["id"] for token in spec["added_tokens"]})
    next_id = max(vocab.values()) + 1
    new_ids: dict[str, int] = {}
    for left, right in merges:
        if left + right not in vocab:
            vocab[left + right] = new_ids[left + right] = next_id
            next_id += 1
    as_text = bool(model["merges"]) and isinstance(model["merges"][0], str)
    model["merges"] += [f"{left} {right}" if as_text else [left, right] for left, right in merges]
    return spec, new_ids
