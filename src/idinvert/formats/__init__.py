"""Every foreign weight format is read here, one module per format, never running code from a file.

- ``common``: safe ``torch.load`` of plain state_dicts and strict key/shape copying;
- ``official``: the released IDInvert ``.pth`` files (StyleGAN generator, encoder, VGG16);
- ``dcgan``: plain DCGAN generator state_dicts (the pretrained face model of PyPI ``generateme``);
- ``nvidia``: NVIDIA ``stylegan2-ada-pytorch`` network snapshots, through a restricted unpickler that
  never runs their embedded source;
- ``rosinality``: rosinality ``stylegan2-pytorch`` checkpoints (read and written);
- ``stylegan2``: ``load_stylegan2(path)``, which tells those two apart.
"""
