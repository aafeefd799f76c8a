//! Distance transforms, connected components and the U-Net weight map.
