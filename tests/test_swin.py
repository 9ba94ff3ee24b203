"""Swin-UNet: any input size, SR scales, batch independence, identity at initialisation, seeded degradations
that agree with the reference resize; text conditioning (encoder, FiLM, cross-attention, dropout, guidance, the
gate); the denoising table (same noise for every method, BM3D as the package computes it)."""
import pytest
import torch
import torch.nn.functional as F

from restore_nb.core import save_model, load_model
from restore_nb.models import SwinUNet, SwinUNetConfig, SWIN_CONFIGS, pad_to_multiple
from restore_nb.physics import Downsample, GaussianNoise, Identity, degrade
from restore_nb.tasks.denoise import RestorationPairs
from restore_nb.data import ImageSource


def tiny(**kw): return SwinUNet(SwinUNetConfig(**{**SWIN_CONFIGS['tiny'], **kw})).eval()


@pytest.mark.parametrize('h,w', [(16, 16), (17, 33), (40, 24), (5, 7)])
def test_any_size_and_identity_at_init(h, w):
    m = tiny(scales=(1, 2))
    y = torch.rand(2, 3, h, w)
    with torch.no_grad():
        assert torch.equal(m(y), y)                                          # zero-initialised tail: the identity
        up = m(y, Downsample(2))                                             # the operator picks the SR head
    assert up.shape == (2, 3, 2 * h, 2 * w)
    xp, _ = pad_to_multiple(y, 16)
    assert torch.allclose(up,
                          F.interpolate(xp, scale_factor=2, mode='bicubic', align_corners=False)[..., :2 * h, :2 * w])


def test_batch_independence_and_roundtrip(tmp_path):
    m = tiny()
    for p in m.tails.parameters(): torch.nn.init.normal_(p, std=0.01)         # leave the identity so the body matters
    y = torch.rand(3, 3, 24, 40)
    with torch.no_grad(): out = m(y)
    assert torch.allclose(out[1:2], m(y[1:2]), atol=1e-5)
    m2 = load_model(save_model(m, tmp_path / 'swin'))
    with torch.no_grad(): assert torch.equal(m2(y), out)


def test_config_errors_and_size():
    with pytest.raises(ValueError, match='scales'): SwinUNetConfig(scales=(3,))
    with pytest.raises(ValueError, match='multiple of head_dim'): SwinUNetConfig(width=96, head_dim=32)
    with pytest.raises(ValueError, match='scale 4 has no head'): tiny()(torch.rand(1, 3, 16, 16), Downsample(4))
    with pytest.raises(ValueError, match=r'\(B,3,H,W\)'): tiny()(torch.rand(1, 1, 16, 16))
    with torch.device('meta'):
        n = sum(p.numel() for p in SwinUNet(SwinUNetConfig(**SWIN_CONFIGS['default'])).parameters())
    assert 28e6 < n < 32e6                                                   # the ~30 M default


def test_degrade_seeded_and_reference():
    x = torch.rand(3, 64, 64)
    a, ia = degrade(x, torch.Generator().manual_seed(3))
    b, ib = degrade(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and ia == ib
    y, _ = degrade(x, torch.Generator().manual_seed(0), order=0, scale=4)
    ref = F.interpolate(x[None], size=(16, 16), mode='bicubic', align_corners=False, antialias=True)[0].clamp(0, 1)
    assert torch.allclose(y, ref, atol=1e-6)
    y, info = degrade(x, torch.Generator().manual_seed(0), order=0, noise=0.1)
    assert info['sigma'] == [0.1] and abs(float((y - x).std()) - 0.1) < 0.01
    with pytest.raises(ValueError, match='multiples of scale 3'):
        degrade(torch.rand(3, 32, 32), torch.Generator(), scale=3)
    with pytest.raises(ValueError, match='task'): RestorationPairs(ImageSource('builtin'), task='deblur')


# the short training run that beats its noisy input (+3 dB at σ = 25) is asserted in nbs/09c_tasks.denoise.ipynb


# ---- conditioning --------------------------------------------------------------------------------
from restore_nb.models import TextEncoder, FiLM, CrossAttention, DegradationHead


@pytest.fixture(scope='module')
def enc():
    return TextEncoder('minilm', max_tokens=12)


def test_text_encoder_shapes_mask_truncation_cache(enc):
    t = enc(['heavy noise', 'a photo of a red brick wall with strong jpeg artefacts'])
    assert t['tokens'].shape[:2] == t['mask'].shape and t['tokens'].shape[-1] == enc.dim == 384
    assert t['mask'][0].sum() < t['mask'][1].sum() and not t['mask'][0, -1]          # the short prompt is padded
    assert enc(['word ' * 50])['tokens'].shape[1] == 12                              # truncation
    a = enc(['heavy noise'])
    # same prompt, same encoding (cached)
    assert torch.equal(a['pooled'][0], t['pooled'][0])


def test_film_and_cross_attention(enc):
    torch.manual_seed(0)
    h = torch.randn(2, 16, 5, 7)
    f = FiLM(384, 16)
    t = enc(['noise', 'blur'])
    assert torch.equal(f(h, t['pooled']), h)                                         # zero-initialised: identity
    torch.nn.init.normal_(f.proj.weight)
    g = torch.tensor([[0.0], [1.0]])
    out = f(h, t['pooled'], g)
    assert torch.equal(out[0], h[0]) and not torch.allclose(out[1], h[1])            # gate 0 switches it off per sample
    ca = CrossAttention(16, 384, heads=2)
    torch.nn.init.normal_(ca.attn.out_proj.weight)
    o = ca(h, t['tokens'], t['mask'])
    # padding tokens are masked: extending the token list with padding changes nothing
    pad_tok = torch.cat([t['tokens'], torch.randn(2, 3, 384)], 1)
    pad_mask = torch.cat([t['mask'], torch.zeros(2, 3, dtype=torch.bool)], 1)
    assert torch.allclose(ca(h, pad_tok, pad_mask), o, atol=1e-5)
    empty = ca(h, t['tokens'], torch.zeros_like(t['mask']))                          # an empty prompt adds nothing
    assert torch.equal(empty, h)
    d, gate = DegradationHead(16)(h)
    assert d.shape == (2, 3) and gate.shape == (2, 1) and ((gate > 0) & (gate < 1)).all()


def test_conditioning_dropout_and_guidance(enc):
    m = SwinUNet(SwinUNetConfig(**SWIN_CONFIGS['tiny'], text_dim=384, p_uncond=1.0))
    for p in m.tails.parameters(): torch.nn.init.normal_(p, std=0.02)
    for f in m.film: torch.nn.init.normal_(f.proj.weight, std=0.05)
    y, t = torch.rand(2, 3, 16, 16), enc(['noise', 'blur'])
    m.train()
    with torch.no_grad(): dropped = m(y, text=t)
    m.eval()
    with torch.no_grad():
        # p_uncond = 1: always the null prompt
        assert torch.allclose(dropped, m(y, text=m.null_text(t)), atol=1e-6)
        c, u = m(y, text=t), m(y, text=m.null_text(t))
        assert torch.allclose(m(y, text=t, guidance=3.0), u + 3 * (c - u), atol=1e-5)


@pytest.mark.slow
def test_onnx_export_matches_at_another_size(tmp_path):
    # traced at 64×64 (no padding needed), checked at 96×104 (padding needed): the graph must pad at every size
    from restore_nb.infer import export_onnx
    m = tiny()
    for p in m.tails.parameters(): torch.nn.init.normal_(p, std=0.02)
    r = export_onnx(m, tmp_path / 'swin.onnx', size=64, check_size=96)
    assert r['max_abs_diff'] < 1e-4


def test_captioned_pairs_and_conditioned_loss():
    from restore_nb.tasks.denoise import CaptionedPairs, ConditionedLoss
    from restore_nb.models import PromptedSwin
    from restore_nb.physics import PROMPTS, apply_kind
    ds = CaptionedPairs(ImageSource('builtin', mode='rgb'), n=24, size=32, seed=0)
    seen = set()
    for i in range(24):
        y, p, x, d = ds[i]
        prompt = PROMPTS[int(p)]
        seen.add(prompt.split()[-2] if 'noise' not in prompt else 'noise')
        assert y.shape == x.shape == (3, 32, 32) and d.shape == (3,)
        if 'noise' in prompt: assert 0.1 <= float(d[0]) * 50 <= 50 and d[1] == d[2] == 0
        if 'blurred' in prompt: assert 0.5 <= float(d[1]) * 3 <= 3 and d[0] == 0
    assert len(seen) >= 3
    x = torch.rand(3, 32, 32)
    y, d = apply_kind(x, 'noise', 2, torch.Generator().manual_seed(0))                 # heavy: σ in 30..50
    assert 30 / 255 * 0.8 < float((y - x).std()) < 50 / 255 * 1.2 and 30 <= float(d[0]) * 50 <= 50
    m = PromptedSwin.build().eval()
    lf = ConditionedLoss(m, est_weight=0.5)
    with torch.no_grad():
        pred = m(y[None], None, torch.tensor([int(p)]))
        loss = lf(pred, x[None], d[None])
    est = m.net.last['estimate']
    assert float(loss) == pytest.approx(float(F.l1_loss(pred, x[None]) + 0.5 * F.l1_loss(est, d[None])), rel=1e-5)


def test_gate_zero_switches_the_prompt_off(enc):
    m = SwinUNet(SwinUNetConfig(**SWIN_CONFIGS['tiny'], text_dim=384)).eval()
    for p in m.tails.parameters(): torch.nn.init.normal_(p, std=0.02)
    for f in m.film: torch.nn.init.normal_(f.proj.weight, std=0.05)
    for ca in (m.xattn_body, m.xattn_out): torch.nn.init.normal_(ca.attn.out_proj.weight, std=0.05)
    y, a, b = torch.rand(1, 3, 16, 16), enc(['heavy noise']), enc(['a lightly blurred photo'])
    with torch.no_grad():
        assert not torch.allclose(m(y, text=a), m(y, text=b), atol=1e-6)
        # the ablation of bench_conditioning
        m.gate_override = 0.0
        assert torch.equal(m(y, text=a), m(y, text=b)) and float(m.last['gate']) == 0.0


def _crops(folder, mode, n=2, size=48):
    from restore_nb.core import sample_images, save_image
    folder.mkdir()
    for name, im in list(sample_images(mode=mode).items())[:n]: save_image(im[:, :size, :size], folder / f'{name}.png')
    return folder


@pytest.mark.parametrize('mode', ['rgb', 'gray'])
def test_denoise_protocol_same_noise_and_bm3d_reference(tmp_path, mode):
    import bm3d, numpy as np
    from restore_nb.core import item_seed
    from restore_nb.tasks.denoise import evaluate_denoise, bm3d_method, noisy_input, denoise_degradations
    folder = _crops(tmp_path / mode, mode, n=1, size=40)
    seen = []
    def spy(y, A):
        seen.append(y)
        return y
    tab = evaluate_denoise({'noisy': noisy_input(), 'spy': spy, 'bm3d': bm3d_method()}, folder, sigmas=(25,), mode=mode)
    rows = {r['method']: r for r in tab.per_image}
    # every method sees the same noisy copy
    assert rows['spy']['psnr'] == pytest.approx(rows['noisy']['psnr'], abs=1e-6)
    assert rows['bm3d']['psnr'] > rows['noisy']['psnr'] + 5
    x = ImageSource(folder, mode=mode)[0][None]
    y = Identity(GaussianNoise(25 / 255)).measure(x, seed=item_seed(0, 0, 250))      # σ's stream is 10σ
    assert torch.equal(seen[0], y) and seen[0].shape[1] == (3 if mode == 'rgb' else 1)
    # the wrapper is the package's own call
    z = y[0].permute(1, 2, 0).double().numpy()
    ref = bm3d.bm3d_rgb(z, 25 / 255) if mode == 'rgb' else np.asarray(bm3d.bm3d(z[..., 0], 25 / 255))[..., None]
    A = denoise_degradations((25,))['σ=25']
    assert torch.allclose(bm3d_method()(y, A)[0], torch.from_numpy(ref).permute(2, 0, 1).float(), atol=1e-5)


def test_losses_l1_ssim_lpips():
    from restore_nb.tasks.denoise import swin_dataloaders, swin_learner
    from restore_nb.metrics import LPIPS, ssim
    dls = swin_dataloaders('builtin', 'denoise', size=32, bs=2, n_train=4, n_valid=2, device='cpu', mode='gray')
    y, x = dls.one_batch()
    assert y.shape[1] == 1
    learn = swin_learner(dls, 'tiny', loss='l1+lpips', lpips_pretrained=False)     # random backbone: offline
    assert learn.model.config.channels == 1
    with torch.no_grad():
        p = learn.model(y)
        ref = F.l1_loss(p, x) + 0.1 * LPIPS('alex', pretrained=False)(p.clamp(0, 1), x).mean()
        assert float(learn.loss_func(p, x)) == pytest.approx(float(ref), rel=1e-5)
    learn = swin_learner(dls, 'tiny', loss='l1+ssim')
    with torch.no_grad():
        assert float(learn.loss_func(p, x)) == pytest.approx(float(F.l1_loss(p, x) + 0.2 * (1 - ssim(p, x))), rel=1e-4)
    with pytest.raises(ValueError, match="loss: expected one of"): swin_learner(dls, 'tiny', loss='l2')


def test_text_encoder_loads_a_clip_text_model_by_path(tmp_path, enc):
    # the CLIP path without the hub: a small CLIPTextModel built from config, saved with MiniLM's tokenizer
    import transformers
    cfg = transformers.CLIPTextConfig(vocab_size=enc.tokenizer.vocab_size, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2,
                                      num_attention_heads=2, max_position_embeddings=64,
                                      eos_token_id=enc.tokenizer.sep_token_id)
    transformers.CLIPTextModel(cfg).save_pretrained(tmp_path)
    enc.tokenizer.save_pretrained(tmp_path)
    clip = TextEncoder(str(tmp_path), max_tokens=8)
    assert clip.clip and clip.dim == 32 and not any(p.requires_grad for p in clip.parameters())
    t = clip(['heavy noise', 'a photo with light gaussian noise and some blur'])
    assert t['tokens'].shape == (2, 8, 32) and t['pooled'].shape == (2, 32) and t['mask'][0].sum() < t['mask'][1].sum()
