"""Run a few GAN, encoder and StyleGAN2 training steps, data-parallel under torchrun or as one process.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_worker.py OUT
    python tests/ddp_worker.py OUT          (one process, the same global batch)

Writes each rank's G, D and E state to OUT/{gan,enc,gan2}_rank{r}.pt. Float64, so that the
comparison sees the algorithm and not rounding.
"""

import sys
from pathlib import Path

import torch

from idinvert.networks.config import DiscriminatorConfig, EncoderConfig, GeneratorConfig
from idinvert.networks import StyleGAN2Config, VGG16Features
from idinvert.parallel import init_distributed
from idinvert.training.encoder import EncoderTrainConfig, EncoderTrainer
from idinvert.training.gan import GANTrainConfig, GANTrainer
from idinvert.training.gan2 import GAN2TrainConfig, GAN2Trainer

torch.set_default_dtype(torch.float64)
torch.set_num_threads(1)
out = Path(sys.argv[1])
world = init_distributed("cpu")
g = GeneratorConfig(resolution=16, z_dim=16, w_dim=16, mapping_layers=2, mapping_fmaps=16, fmaps_base=64, fmaps_max=16)
d = DiscriminatorConfig(resolution=16, fmaps_base=64, fmaps_max=16)
config = GANTrainConfig(generator=g, discriminator=d, batch_size=8, r1_interval=2, lod_initial_resolution=16,
                        noise_mode="const", seed=5)
batch = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(9)) * 2 - 1
part = world.local_slice(8)
gan = GANTrainer(config, world)
for _ in range(3):
    gan.train_step(batch[part], lod=0.0)
torch.save({"G": gan.G.state_dict(), "D": gan.D.state_dict(), "Gs": gan.Gs.state_dict()},
           out / f"gan_rank{world.rank}.pt")

torch.manual_seed(3)
vgg = VGG16Features("torchvision")
enc_config = EncoderTrainConfig(encoder=EncoderConfig(resolution=16, num_layers=g.num_layers, w_dim=16,
                                                      channels_base=4, channels_max=16),
                                batch_size=8, total_kimg=1, lambda_adv=0.1)
enc = EncoderTrainer(enc_config, gan.Gs, gan.D, vgg, lambda_vgg=0.01, world=world)
for _ in range(3):
    enc.train_step(batch[part])
torch.save({"E": enc.E.state_dict(), "D": enc.D.state_dict()}, out / f"enc_rank{world.rank}.pt")

# StyleGAN2: lazy R1 and path length both due at steps 0 and 2. Minibatch-std groups are formed per
# process (as in NVIDIA's data-parallel training), so this comparison runs without minibatch std.
net = StyleGAN2Config(resolution=16, z_dim=16, w_dim=16, mapping_layers=2, channel_base=64, channel_max=16,
                      mbstd_channels=0)
gan2 = GAN2Trainer(GAN2TrainConfig(network=net, batch_size=8, r1_interval=2, pl_interval=2, noise_mode="const",
                                   seed=5), world)
for _ in range(3):
    gan2.train_step(batch[part])
torch.save({"G": gan2.G.state_dict(), "D": gan2.D.state_dict(), "Gs": gan2.Gs.state_dict()},
           out / f"gan2_rank{world.rank}.pt")
