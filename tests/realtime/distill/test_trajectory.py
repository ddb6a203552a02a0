import numpy as np
import pytest
import torch

from realtime.distill.trajectory import (
    FINAL,
    DistillGrid,
    ddim_step,
    draw_noise,
    pick_segments,
    student_loss,
    teacher_trajectory,
)
from realtime.render.samplers import SamplerConfig, make_scheduler, sample_latents
from tests.realtime.render.diffusion_fixtures import PerFrameUNet


def test_grid_points_and_segments():
    g = DistillGrid.build([1, 2, 4], 20)
    assert g.teacher_timesteps == list(range(999, 0, -50))
    assert g.points == [999, 749, 499, 249, FINAL]
    assert [(s.steps, s.start, s.end) for s in g.segments] == [
        (1, 999, FINAL), (2, 999, 499), (2, 499, FINAL), (4, 999, 749), (4, 749, 499), (4, 499, 249), (4, 249, FINAL)]
    assert g.alphas[FINAL] == pytest.approx(0.99915, abs=1e-5)  # set_alpha_to_one false: alphas_cumprod[0]
    with pytest.raises(ValueError, match="not on the 20-step teacher grid"):
        DistillGrid.build([3], 20)


def test_ddim_step_equals_the_renderers_scheduler():
    g = DistillGrid.build([4], 20)
    sched = make_scheduler(SamplerConfig(steps=4, guidance=1.0))
    gen = torch.Generator().manual_seed(0)
    x, eps = torch.randn(3, 4, 2, 4, 4, generator=gen), torch.randn(3, 4, 2, 4, 4, generator=gen)
    for seg, t in zip(g.segments, sched.timesteps):
        assert seg.start == int(t)
        ours = ddim_step(x, eps, torch.full((3,), g.alphas[seg.start], dtype=torch.float64),
                         torch.full((3,), g.alphas[seg.end], dtype=torch.float64))
        torch.testing.assert_close(ours, sched.step(eps, t, x).prev_sample, atol=1e-6, rtol=0)


def _unet():
    net = PerFrameUNet(seed=1)

    class Wrapped(torch.nn.Module):  # the UNet's output type
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x, t, encoder_hidden_states=None):
            t = t if torch.is_tensor(t) and t.ndim == 0 else torch.as_tensor(t).reshape(-1)[0]
            return type("Out", (), {"sample": self.net(x, t, encoder_hidden_states)})()

    return Wrapped()


def test_teacher_states_follow_the_renderers_sampler():
    g = DistillGrid.build([1, 2], 20)
    unet = _unet()
    den = lambda x, t, a: unet(x, t, encoder_hidden_states=a).sample
    noise = draw_noise(torch.Generator().manual_seed(3), 2, 2, 4)
    cond = torch.randn(2, 9, 2, 4, 4, generator=torch.Generator().manual_seed(4))
    audio = torch.randn(2, 2, 50, 384, generator=torch.Generator().manual_seed(5))
    states = teacher_trajectory(den, noise, cond, audio, g, guidance=1.5)
    assert states.shape == (3, 2, 4, 2, 4, 4)  # points 999, 499, end
    torch.testing.assert_close(states[0], noise)  # DDIM's initial sigma is 1
    full = sample_latents(lambda x, t, a, r: den(x, t, a), noise, cond, audio,
                          SamplerConfig(steps=20, guidance=1.5, timestep_spacing="trailing"), [0, 0])
    torch.testing.assert_close(states[-1], full)
    assert torch.equal(noise[:, :, 0], noise[:, :, 1])  # one draw repeated over frames, as the renderer


def test_a_student_equal_to_the_teacher_has_zero_loss_when_the_grids_coincide():
    """With teacher.steps == K and no guidance, the teacher's own K-step DDIM is the target: the
    teacher as student reproduces every segment exactly (grids, states and DDIM algebra agree)."""
    g = DistillGrid.build([2], 2)
    unet = _unet()
    den = lambda x, t, a: unet(x, t, encoder_hidden_states=a).sample
    gen = torch.Generator().manual_seed(7)
    noise = draw_noise(gen, 3, 2, 4)
    cond, audio = torch.randn(3, 9, 2, 4, 4, generator=gen), torch.randn(3, 2, 50, 384, generator=gen)
    states = teacher_trajectory(den, noise, cond, audio, g, guidance=1.0).transpose(0, 1)

    def per_sample(x, t, a):  # the stand-in takes one timestep per call
        return torch.cat([den(x[i:i + 1], t[i], a[i:i + 1]) for i in range(len(x))])

    for seg in range(len(g.segments)):
        loss, per = student_loss(per_sample, states, cond, audio, g, torch.full((3,), seg))
        assert float(loss.detach()) < 1e-10 and per.shape == (3,)
    loss, _ = student_loss(lambda x, t, a: per_sample(x, t, a) + 0.1, states, cond, audio, g, torch.zeros(3, dtype=int))
    assert float(loss.detach()) > 1e-4


def test_segments_are_drawn_per_step_count():
    g = DistillGrid.build([1, 4], 20)
    idx = pick_segments(np.random.default_rng(0), g, 4000).numpy()
    one_step = np.mean([g.segments[i].steps == 1 for i in idx])
    assert 0.46 < one_step < 0.54  # half the updates for the 1-step map, the other half over 4 segments
