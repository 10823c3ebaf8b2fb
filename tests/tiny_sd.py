"""A tiny Stable-Diffusion-layout folder (random weights) for tests: unet, vae, scheduler, tokenizer, text_encoder."""
import gzip
import json
from pathlib import Path


def write_clip_tokenizer(folder: Path) -> None:
    """CLIP's BPE tokenizer files (vocab.json, merges.txt) rebuilt from open_clip's bundled vocabulary."""
    import open_clip
    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    merges = gzip.open(default_bpe()).read().decode('utf-8').split('\n')[1:49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + '</w>' for v in vocab] + [''.join(m.split()) for m in merges]
    vocab += ['<|startoftext|>', '<|endoftext|>']
    folder.mkdir(parents=True, exist_ok=True)
    (folder / 'vocab.json').write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / 'merges.txt').write_text('#version: 0.2\n' + '\n'.join(merges) + '\n')
    (folder / 'tokenizer_config.json').write_text(json.dumps(dict(
        model_max_length=77, bos_token='<|startoftext|>', eos_token='<|endoftext|>', unk_token='<|endoftext|>',
        pad_token='<|endoftext|>', tokenizer_class='CLIPTokenizer')))
    assert open_clip  # imported for default_bpe


def make_tiny_sd(folder: Path, seed: int = 0) -> Path:
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    torch.manual_seed(seed)
    UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'), up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8).save_pretrained(folder / 'unet')
    AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8, 16),
                  down_block_types=('DownEncoderBlock2D',) * 2, up_block_types=('UpDecoderBlock2D',) * 2,
                  latent_channels=4, norm_num_groups=8, sample_size=32).save_pretrained(folder / 'vae')
    DDPMScheduler(num_train_timesteps=1000, beta_schedule='scaled_linear', beta_start=0.00085,
                  beta_end=0.012).save_pretrained(folder / 'scheduler')
    CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                                 vocab_size=49408, max_position_embeddings=77)).save_pretrained(folder / 'text_encoder')
    write_clip_tokenizer(folder / 'tokenizer')
    return folder
