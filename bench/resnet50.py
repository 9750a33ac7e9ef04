"""Parameter shapes of torchvision's ResNet-50 (He et al. 2016, v1.5 layout).

161 tensors, 25,557,032 elements, in ``model.parameters()`` order: the stem
convolution and batch norm, four stages of bottleneck blocks (3, 4, 6, 3
blocks; the first block of each stage has a projection shortcut), then the
classifier.  Written out from the published architecture so the benchmark
needs neither torch nor torchvision.
"""

STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))
EXPANSION = 4


def shapes(num_classes=1000):
    out = [(64, 3, 7, 7), (64,), (64,)]
    inplanes = 64
    for width, blocks, _stride in STAGES:
        for b in range(blocks):
            out += [(width, inplanes, 1, 1), (width,), (width,),
                    (width, width, 3, 3), (width,), (width,),
                    (width * EXPANSION, width, 1, 1), (width * EXPANSION,), (width * EXPANSION,)]
            if b == 0:
                out += [(width * EXPANSION, inplanes, 1, 1), (width * EXPANSION,),
                        (width * EXPANSION,)]
            inplanes = width * EXPANSION
    out += [(num_classes, 512 * EXPANSION), (num_classes,)]
    return out


SHAPES = shapes()
NTENSORS = 161
NELEMENTS = 25_557_032

assert len(SHAPES) == NTENSORS, len(SHAPES)
assert sum(__import__("math").prod(s) for s in SHAPES) == NELEMENTS
