"""Tiny random Hugging Face models saved to folders, built offline for encoder tests."""

from __future__ import annotations

from pathlib import Path

WORDS = [
    "the", "a", "gene", "cell", "t", "b", "receptor", "insulin", "protein", "kinase", "binds",
    "immune", "hormone", "ribosomal", "cd3e", "cd8a", "ins", "gcg", "rpl13", "of", "and", "is",
]


def word_level_tokenizer(padding_side: str = "right", bos_eos: bool = False):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[BOS]": 2, "[EOS]": 3}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    kwargs = {}
    if bos_eos:
        tok.post_processor = processors.TemplateProcessing(
            single="[BOS] $A [EOS]", special_tokens=[("[BOS]", 2), ("[EOS]", 3)]
        )
        kwargs = {"bos_token": "[BOS]", "eos_token": "[EOS]"}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
        padding_side=padding_side, model_max_length=64, **kwargs,
    )


def tiny_gpt2(folder: Path, padding_side: str = "right", n_positions: int = 64) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tok = word_level_tokenizer(padding_side)
    cfg = GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=len(tok), n_positions=n_positions,
        bos_token_id=2, eos_token_id=3, pad_token_id=0,
    )
    GPT2LMHeadModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return Path(folder)


def tiny_bert(folder: Path, max_position_embeddings: int = 64) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    tok = word_level_tokenizer(bos_eos=True)
    cfg = BertConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=max_position_embeddings, pad_token_id=0,
    )
    BertModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return Path(folder)
