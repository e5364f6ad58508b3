"""The MetaUAS network (torch and timm are imported only inside this package)."""

from synth.model.metauas import MetaUAS, ModelConfig, count_parameters

__all__ = ["MetaUAS", "ModelConfig", "count_parameters"]
