"""Segment Anything (SAM) in optik: promptable masks and automatic mask generation on
transformers' ``SamModel``, returning optik :class:`~optik.results.Results`.

>>> from optik.sam import SamPredictor, SamAutomaticMaskGenerator     # doctest: +SKIP
>>> p = SamPredictor("hf:facebook/sam-vit-base"); p.set_image("dog.jpg")  # doctest: +SKIP
>>> p.predict(points=[[120, 80]]).masks.data.shape                    # doctest: +SKIP
torch.Size([3, 480, 640])
>>> SamAutomaticMaskGenerator(p).generate("dog.jpg").verbose()        # doctest: +SKIP
'23 object'
"""

from optik.sam.automatic import SamAutomaticMaskGenerator
from optik.sam.config import SamPredictConfig, build_sam_config
from optik.sam.predictor import DEFAULT_SAM, SamPredictor, load_sam
from optik.sam.run import sam_predict

__all__ = ["DEFAULT_SAM", "SamAutomaticMaskGenerator", "SamPredictConfig", "SamPredictor", "build_sam_config", "load_sam",
           "sam_predict"]
