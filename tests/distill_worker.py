"""A few distillation steps, data-parallel under torchrun or as one process (float64).

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/distill_worker.py OUT [ARCH ...]
    python tests/distill_worker.py OUT [ARCH ...]          (one process, the same global batch)

For each student kind ARCH (default: stylegan and stylegan2, one after the other in the same processes),
writes each rank's student, EMA student and discriminator to OUT/distill_{ARCH}_rank{r}.pt (three
regression steps with the mixing term, then three adversarial steps).
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_dcgan import ReferenceDCGAN, load_dcgan_generator_from  # noqa: E402

from idinvert.networks.config import DiscriminatorConfig, GeneratorConfig  # noqa: E402
from idinvert.parallel import init_distributed  # noqa: E402
from idinvert.training.distill import STUDENT_ARCHS, DistillConfig, DistillTrainer, student_config  # noqa: E402

torch.set_default_dtype(torch.float64)
torch.set_num_threads(1)
out = Path(sys.argv[1])
world = init_distributed("cpu")
reals = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(9)) * 2 - 1
part = world.local_slice(8)
for arch in sys.argv[2:] or STUDENT_ARCHS:
    torch.manual_seed(0)
    teacher = load_dcgan_generator_from(ReferenceDCGAN(16, [32, 16]).eval())
    if arch == "stylegan":
        student = GeneratorConfig(resolution=16, z_dim=16, w_dim=16, mapping_layers=2, mapping_fmaps=16,
                                  mapping_lr_mul=1.0, fmaps_base=64, fmaps_max=16)
    else:
        student = student_config(arch, resolution=16, z_dim=16, w_dim=16, mapping_layers=2, fmaps_base=64,
                                 fmaps_max=16)
    config = DistillConfig(arch=arch, student=student, total_kimg=0.024, adv_kimg=0.024, batch_size=8,
                           lambda_lpips=0.0, mixing_prob=0.5,
                           discriminator=DiscriminatorConfig(resolution=16, fmaps_base=64, fmaps_max=16,
                                                             mbstd_group_size=1))
    trainer = DistillTrainer(config, teacher, world)
    for _ in range(6):
        trainer.train_step(reals[part] if trainer.adversarial else None)
    torch.save({"S": trainer.S.state_dict(), "Ss": trainer.Ss.state_dict(), "D": trainer.D.state_dict()},
               out / f"distill_{arch}_rank{world.rank}.pt")
