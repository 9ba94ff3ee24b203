("Diffusion restoration: v/ε algebra, DDIM against diffusers, guidance, data-consistency on the real operators, DPS, "
 "provenance and bit-exact reproduction.")
import json

import pytest
import torch

from restore_nb.core import save_model, save_image, load_image
from restore_nb.models import (
    DiffusionConfig,
    LatentDiffusion,
    with_pretrained_vae,
    SwinUNet,
    SwinUNetConfig,
    SWIN_CONFIGS,
)
from restore_nb.solvers import data_prox, residual
from restore_nb.tasks.diffusion import (sample, guided, timesteps, matched_timestep, diffpir, dps_gradient, edit_map,
                                        confidence_map,
                                        module_hashes, diffusion_restore_files, reproduce, fit_autoencoder, cascade)
from restore_nb.infer import verify
from restore_nb.train import load_checkpoint
from restore_nb.physics import (
    Blur,
    Downsample,
    Identity,
    Mosaic,
    motion_kernel,
    shake_kernel,
    operator_from_spec as make_operator,
)


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return LatentDiffusion(DiffusionConfig(widths=[16, 32], attention=[False, True], groups=8)).eval()


@pytest.mark.parametrize('prediction', ['epsilon', 'v_prediction'])
def test_ddim_loop_equals_diffusers(prediction):
    from diffusers import DDIMScheduler
    torch.manual_seed(0)
    m = LatentDiffusion(DiffusionConfig(widths=[16, 32], attention=[False, True], groups=8, prediction=prediction,
                                        schedule='linear')).eval()
    lq = torch.rand(1, 3, 16, 16)
    ours = sample(m, lq, steps=5, seed=4)
    sch = DDIMScheduler.from_config(m.scheduler('ddim').config, timestep_spacing='trailing')
    sch.set_timesteps(5)
    assert sch.timesteps.tolist() == timesteps(m, 5)
    z = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    cond = m.encode(lq)
    with torch.no_grad():
        for t in sch.timesteps: z = sch.step(m.predict(z, int(t), cond), t, z).prev_sample
    assert torch.equal(m.decode(z).clamp(0, 1), ours)


def test_x0_eps_inverts_the_forward_process(model):
    for pred in ('epsilon', 'v_prediction'):
        m = LatentDiffusion(DiffusionConfig(widths=[16, 32], attention=[False, True], groups=8, prediction=pred))
        z0, eps = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
        for t in (0, 250, 999):
            a = m.alphas_cumprod[t].float()
            zt = a.sqrt() * z0 + (1 - a).sqrt() * eps
            out = eps if pred == 'epsilon' else a.sqrt() * eps - (1 - a).sqrt() * z0
            r0, re = m.to_x0_eps(zt, out, t)
            # ε-prediction cannot recover z0 at the last step (√ᾱ ≈ 5e-5): why v is the default
            if pred == 'v_prediction' or t < 999:
                assert torch.allclose(r0, z0, atol=1e-3) and torch.allclose(re, eps, atol=1e-3)


def test_config_errors_name_the_field():
    for kw, word in [(dict(schedule='exp'), 'schedule'), (dict(prediction='x0'), 'prediction'), (dict(latent='vq'),
                                                                                                 'latent'),
                     (dict(widths=[16, 32], attention=[True]), 'attention')]:
        with pytest.raises(ValueError, match=word): DiffusionConfig(**kw)


def test_guidance_and_conditioning_dropout(model):
    z, cond = torch.randn(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        c, u = model.predict(z, 300, cond), model.predict(z, 300, None)
        assert torch.allclose(guided(model, z, 300, cond, None, 2.5), u + 2.5 * (c - u), atol=1e-5)
        keep = torch.tensor([True, False])              # dropping one sample's conditioning = its unconditional output
        mixed = model.predict(z, 300, cond, None, keep)
        assert torch.allclose(mixed[0], c[0], atol=1e-6) and torch.allclose(mixed[1], u[1], atol=1e-6)


def test_text_conditioning_reaches_the_unet_and_dropout_gives_the_null_token(model):
    torch.manual_seed(1)
    text = dict(tokens=torch.randn(2, 5, 384), mask=torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool))
    z = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        a, b = model.predict(z, 500, None, text), model.predict(z, 500, None, None)
        assert (a - b).abs().max() > 1e-4                                   # the prompt changes the prediction
        dropped = model.predict(z, 500, None, text, torch.tensor([False, False]))
        assert torch.allclose(dropped, b, atol=1e-5)                        # dropped prompt = the null token


@pytest.mark.parametrize('op', [Blur(motion_kernel(9, 30.0)), Blur(shake_kernel(11, seed=3), 'circular'), Downsample(2),
                                Downsample(2, 'bicubic'), Mosaic('RGGB'), Mosaic('XTRANS')], ids=lambda o: repr(o)[:40])
def test_data_consistency_step_reduces_the_residual(op):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 24, 24)
    y = op(x) + 0.01 * torch.randn_like(op(x))
    for rho in (1e-3, 0.1, 10.0):
        x0 = torch.rand_like(x)
        assert (residual(op, data_prox(op, y, x0, rho), y) < residual(op, x0, y)).all()


def test_data_prox_matches_the_closed_form_for_box_downsampling():
    # Woodbury: (AᵀA + ρI)⁻¹ b = (b − Aᵀ A b / (ρ + 1/f²)) / ρ, since A Aᵀ = I / f²
    torch.manual_seed(0)
    op, f, rho = Downsample(2), 2, 0.2
    x0 = torch.rand(1, 3, 16, 16)
    y = torch.rand(1, 3, 8, 8)
    b = op.adjoint(y) + rho * x0
    ref = (b - op.adjoint(op(b)) / (rho + 1 / f ** 2)) / rho
    assert torch.allclose(data_prox(op, y, x0, rho, iters=50), ref, atol=1e-5)


def test_diffpir_fits_the_measurement_and_dps_gradient_descends(model):
    torch.manual_seed(0)
    op = Blur(motion_kernel(7, 45.0))
    x = torch.rand(1, 3, 16, 16)
    y = op(x) + 0.01 * torch.randn(1, 3, 16, 16)
    out = diffpir(model, y, op, 0.01, steps=4)
    assert residual(op, out, y) < residual(op, op.adjoint(y), y)
    z = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    g, _, _, r = dps_gradient(model, z, 400, y, op)
    _, _, _, r2 = dps_gradient(model, z - 1e-2 * g, 400, y, op)
    assert r2 < r


def test_measurement_start_uses_the_matched_timestep(model):
    a = model.alphas_cumprod
    for s in (5 / 255, 25 / 255, 50 / 255):
        t = matched_timestep(model, s)
        assert (1 - a[t]) / a[t] >= (2 * s) ** 2 > (1 - a[t - 1]) / a[t - 1]
    kl = LatentDiffusion(DiffusionConfig(latent='kl', widths=[16, 32], attention=[False, True], groups=8,
                                         vae_widths=[16, 32]))
    with pytest.raises(ValueError, match='pixel-space'): matched_timestep(kl, 0.1)
    out = sample(model, torch.rand(1, 3, 16, 16), steps=3, sigma=0.1)
    assert out.shape == (1, 3, 16, 16)


def test_maps():
    x = torch.rand(1, 3, 32, 32)
    s = 0.05
    y = x + s * torch.randn_like(x)
    assert abs(float(edit_map(x, y, Identity(), s).mean()) - 1) < 0.15
    # exact fit: no edit, on x's grid
    assert float(edit_map(x, Downsample(2)(x), Downsample(2), s).max()) < 1e-5
    assert edit_map(x, Downsample(2)(x), Downsample(2), s).shape == (1, 1, 32, 32)
    c = confidence_map(torch.stack([x, x + 0.5 * s, x - 0.5 * s]), s)
    assert 0.5 < float(c.mean()) < 1 and float(confidence_map(torch.stack([x, x]), s).min()) == 1.0


def test_operator_specs_round_trip():
    k = motion_kernel(7, 10.0)
    assert torch.allclose(make_operator(dict(kind='blur', kernel=k.tolist())).kernel.squeeze(), k.float())
    assert make_operator(dict(kind='downsample', factor=4)).factor == 4
    with pytest.raises(ValueError, match="kind must be one of"): make_operator(dict(kind='jpeg'))


def test_restore_files_reproduce_bit_exactly_and_detect_changes(model, tmp_path):
    save_model(model, tmp_path/'ckpt')
    x = torch.rand(3, 16, 16)
    save_image((x + 0.1 * torch.randn_like(x)).clamp(0, 1), tmp_path/'in.png', bits=16)
    k = motion_kernel(5, 0.0)
    recs = diffusion_restore_files(tmp_path/'ckpt', [tmp_path/'in.png'], tmp_path/'out', steps=3, seed=7, samples=2)
    recs += diffusion_restore_files(tmp_path/'ckpt', [tmp_path/'in.png'], tmp_path/'pir', method='diffpir', steps=3,
                                    seed=7, samples=1,
                                    operator=dict(kind='blur', kernel=k.tolist()), sigma=0.01)
    for r in recs:
        m = json.loads(open(r['manifest']).read())
        assert {'generation', 'model_hashes', 'maps'} <= set(m) and m['model_hashes'] == module_hashes(model)
        assert m['generation']['seed'] == 7 and m['weights']['sha256']
        rr = reproduce(r['output'])
        assert rr['ok'] and rr['bit_exact'], rr
    assert set(json.loads(open(recs[0]['manifest']).read())['maps']) == {'edit', 'confidence'}
    edit = tmp_path/'out'/'in_restored.edit.png'
    save_image(load_image(edit) * 0.5, edit, bits=16)                  # a changed map is caught
    assert verify(recs[0]['output'])['checks']['edit'] == 'changed'
    m = json.loads(open(recs[1]['manifest']).read())
    m['generation']['seed'] = 8  # a manifest that lies about the seed
    open(recs[1]['manifest'], 'w').write(json.dumps(m))
    rr = reproduce(recs[1]['output'])
    assert not rr['bit_exact'] and not rr['ok'] and 'differs' in rr['problems'][-1]
    with pytest.raises(ValueError, match='LatentDiffusion'):
        save_model(SwinUNet(SwinUNetConfig(**SWIN_CONFIGS['tiny'])), tmp_path/'swin')
        diffusion_restore_files(tmp_path/'swin', [tmp_path/'in.png'], tmp_path/'x')


def test_pretrained_vae_loads_from_a_folder_and_autoencoder_fits(tmp_path):
    from diffusers import AutoencoderKL
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(16, 32), norm_num_groups=8, layers_per_block=1, latent_channels=4,
                        down_block_types=('DownEncoderBlock2D',) * 2, up_block_types=('UpDecoderBlock2D',) * 2)
    vae.save_pretrained(tmp_path/'vae')
    m = with_pretrained_vae(str(tmp_path/'vae'), DiffusionConfig(widths=[16, 32], attention=[False, True], groups=8))
    assert all(torch.equal(a, b) for a, b in zip(m.vae.state_dict().values(), vae.state_dict().values()))
    assert m.config.vae_groups == 8 and not any(p.requires_grad for p in m.vae.parameters())
    assert sample(m, torch.rand(1, 3, 16, 16), steps=2).shape == (1, 3, 16, 16)
    with pytest.raises(OSError, match='AutoencoderKL'): with_pretrained_vae(str(tmp_path/'no_such_folder'))
    rep = fit_autoencoder(m, minutes=0.1, size=32, bs=4, device='cpu')
    assert rep['valid_loss'] < rep['valid_loss_before'] and not any(p.requires_grad for p in m.vae.parameters())


def test_cascade_keeps_the_first_estimate_at_low_strength(model):
    first = SwinUNet(SwinUNetConfig(**SWIN_CONFIGS['tiny']))       # the identity at initialisation
    y = torch.rand(1, 3, 16, 16)
    near, far = cascade(first, model, y, steps=10, strength=0.1), cascade(first, model, y, steps=10, strength=1.0)
    assert (near - y).abs().mean() < (far - y).abs().mean()
    with pytest.raises(ValueError, match='strength'): cascade(first, model, y, strength=1.5)


@pytest.mark.slow   # 35 s; 09g_tasks.diffusion trains, restores and reproduces through the same task
def test_cli_train_eval_restore_verify_reproduce(tmp_path, capsys):
    from restore_nb.cli import main
    run_dir = tmp_path/'v0.1_diffusion_pixel'
    assert main(['train', 'diffusion', '--minutes', '0.1', '--size', '16', '--bs', '4', '--out', str(run_dir)]) == 0
    assert 'best valid_loss' in capsys.readouterr().out
    assert main(['eval', 'diffusion', '--ckpt', str(run_dir), '--sigmas', '25', '--steps', '1,2', '--json',
                 str(tmp_path/'e.json')]) == 0
    res = json.loads((tmp_path/'e.json').read_text())
    assert res['task'] == 'diffusion' and set(res['metrics']) == {'noisy '
                                                                  'input', 'DDIM from noise, 1 '
                                                                           'step', 'DDIM from noise, 2 steps',
                                                                 'DDIM from measurement, 1 '
                                                                 'step', 'DDIM from measurement, 2 steps'}
    assert set(res['metrics']['noisy input']) == {'σ=25'}
    x = torch.rand(3, 16, 16)
    save_image((x + 0.1 * torch.randn_like(x)).clamp(0, 1), tmp_path/'n.png', bits=16)
    assert main(['restore', str(tmp_path/'n.png'), '--ckpt', str(run_dir), '--steps', '2', '--samples', '2', '--out',
                 str(tmp_path/'o')]) == 0
    out = tmp_path/'o'/'n_restored.png'
    assert main(['verify', str(out), '--reproduce']) == 0 and 'bit-exact' in capsys.readouterr().out
    assert main(['restore', str(tmp_path/'n.png'), '--ckpt', str(run_dir), '--kernel', 'k.npy', '--factor', '2']) == 2
    assert 'one of --kernel, --factor, --cfa' in capsys.readouterr().err
    save_image(load_image(out) * 0.9, out, bits=16)
    assert main(['verify', str(out), '--reproduce']) == 1
    kl_run = tmp_path/'v0.2_diffusion_kl'                      # a latent model: AutoencoderKL fitted first, then frozen
    assert main(['train', 'diffusion', '--model', 'kl', '--minutes', '0.1', '--size', '16', '--bs', '4', '--out',
                 str(kl_run)]) == 0
    assert 'AutoencoderKL fitted' in capsys.readouterr().out
    assert load_checkpoint(kl_run).config.latent == 'kl'
