//! rlvr: the framework (config, data, environments, generator, trainer).
