//! Mixed scales and sub-images as data (docs/spec.md §4.2). A [`TilingPreset`] says, for the
//! ViT-family encoders (Q-Former, CLIP, DINOv2) and for ConvNeXt separately, how each
//! view is cut from the normalised `image_size` square: a global view resized to a
//! size, then an n×n grid of crops of the image (optionally resized first), and
//! optionally a final resize of every view. Every SPHINX variant is a preset; a new
//! grid needs only new numbers.

use super::images::Planar;
use super::interp::{torch_bicubic, torch_nearest};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interp {
    Bicubic,
    Nearest,
}

/// How one encoder family's views are made from the normalised square `x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewRecipe {
    /// The global view is `x` bicubic-resized to this size (unchanged if equal).
    pub global: usize,
    /// Sub-images per side (0: global view only).
    pub grid: usize,
    /// `x` is bicubic-resized to this size before the grid is cut.
    pub grid_source: usize,
    /// Every view is finally resized to this size with this mode (ConvNeXt's 224 → 256).
    pub then: Option<(usize, Interp)>,
}

impl ViewRecipe {
    pub fn view_count(&self) -> usize {
        1 + self.grid * self.grid
    }

    /// Side of each view this recipe produces.
    pub fn view_size(&self) -> usize {
        match self.then {
            Some((s, _)) => s,
            None => self.global,
        }
    }

    /// The views, global first, then the grid row by row (TL, TR, BL, BR for 2×2).
    pub fn make(&self, x: &Planar) -> Vec<Planar> {
        let resize = |v: &Planar, s: usize| if v.height == s && v.width == s { v.clone() } else { torch_bicubic(v, s, s) };
        let mut views = vec![resize(x, self.global)];
        if self.grid > 0 {
            let src = resize(x, self.grid_source);
            let s = self.grid_source / self.grid;
            for r in 0..self.grid {
                for c in 0..self.grid {
                    views.push(src.crop(c * s, r * s, s, s));
                }
            }
        }
        if let Some((s, mode)) = self.then {
            views = views
                .into_iter()
                .map(|v| match mode {
                    Interp::Nearest => torch_nearest(&v, s, s),
                    Interp::Bicubic => torch_bicubic(&v, s, s),
                })
                .collect();
        }
        views
    }
}

/// The preprocessing of one SPHINX variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TilingPreset {
    pub name: &'static str,
    /// Side of the padded, Pillow-resized square (`image_size`).
    pub image_size: usize,
    /// Views for the Q-Former, CLIP and DINOv2 (224 px each).
    pub vit: ViewRecipe,
    /// Views for ConvNeXt (256 → 8×8 cells, or 512 → 16×16).
    pub convnext: ViewRecipe,
}

const fn recipe(global: usize, grid: usize, grid_source: usize, then: Option<(usize, Interp)>) -> ViewRecipe {
    ViewRecipe { global, grid, grid_source, then }
}

const TO_256: Option<(usize, Interp)> = Some((256, Interp::Nearest));

impl TilingPreset {
    /// `llama_ens`: one 224 view; ConvNeXt sees it at 256 (nearest).
    pub const SPHINX: Self = Self { name: "sphinx", image_size: 224, vit: recipe(224, 0, 224, None), convnext: recipe(224, 0, 224, TO_256) };
    /// `llama_ens5` (SPHINX-1k, SPHINX-v2-1k): global 224 + 2×2 crops of the 448 square.
    pub const SPHINX_1K: Self = Self { name: "sphinx-1k", image_size: 448, vit: recipe(224, 2, 448, None), convnext: recipe(224, 2, 448, TO_256) };
    /// `llama_ens10`: global 224 + 3×3 crops of the 672 square.
    pub const SPHINX_2K: Self = Self { name: "sphinx-2k", image_size: 672, vit: recipe(224, 3, 672, None), convnext: recipe(224, 3, 672, TO_256) };
    /// `mixtral_sparse_ens`: 224 for the ViTs, the whole 512 square for ConvNeXt.
    pub const SPHINX_MOE: Self = Self { name: "sphinx-moe", image_size: 512, vit: recipe(224, 0, 512, None), convnext: recipe(512, 0, 512, None) };
    /// `mixtral_sparse_ens5`: ViTs get 224 + quadrants of the square at 448; ConvNeXt 512 + raw 512 quadrants.
    pub const SPHINX_MOE_1K: Self =
        Self { name: "sphinx-moe-1k", image_size: 1024, vit: recipe(224, 2, 448, None), convnext: recipe(512, 2, 1024, None) };
    /// `llama_ens_light`: as SPHINX-MoE (DINOv2 + ConvNeXt only).
    pub const SPHINX_TINY: Self = Self { name: "sphinx-tiny", ..Self::SPHINX_MOE };
    /// `llama_ens5_light`: as SPHINX-MoE-1k.
    pub const SPHINX_TINY_1K: Self = Self { name: "sphinx-tiny-1k", ..Self::SPHINX_MOE_1K };

    pub const ALL: [Self; 7] =
        [Self::SPHINX, Self::SPHINX_1K, Self::SPHINX_2K, Self::SPHINX_MOE, Self::SPHINX_MOE_1K, Self::SPHINX_TINY, Self::SPHINX_TINY_1K];

    /// A preset by name (`sphinx-v2-1k` is an alias of `sphinx-1k`).
    pub fn by_name(name: &str) -> Option<Self> {
        let name = if name == "sphinx-v2-1k" { "sphinx-1k" } else { name };
        Self::ALL.into_iter().find(|p| p.name == name)
    }

    /// The preset of a `meta.json` `llama_type` (None for text-only types).
    pub fn for_llama_type(t: crate::config::LlamaType) -> Option<Self> {
        use crate::config::LlamaType as L;
        Some(match t {
            L::LlamaEns => Self::SPHINX,
            L::LlamaEns5 => Self::SPHINX_1K,
            L::LlamaEns10 => Self::SPHINX_2K,
            L::MixtralSparseEns => Self::SPHINX_MOE,
            L::MixtralSparseEns5 => Self::SPHINX_MOE_1K,
            L::LlamaEnsLight => Self::SPHINX_TINY,
            L::LlamaEns5Light => Self::SPHINX_TINY_1K,
            L::Llama | L::MixtralSparse => return None,
        })
    }

    /// Every view of the normalised `image_size` square `x` ([3, S, S]).
    pub fn views(&self, x: &Planar) -> Views {
        Views { vit: self.vit.make(x), convnext: self.convnext.make(x) }
    }
}

/// Which encoder family a view is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderViews {
    Vit,
    ConvNext,
}

/// The views of one image, in the model's order (global, then sub-images).
#[derive(Debug, Clone)]
pub struct Views {
    pub vit: Vec<Planar>,
    pub convnext: Vec<Planar>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_grid_is_only_numbers() {
        // A hypothetical 4×4 tiling at 896 px: global 224 + 16 crops of 224.
        let p = TilingPreset { name: "grid-4x4", image_size: 896, vit: recipe(224, 4, 896, None), convnext: recipe(224, 4, 896, TO_256) };
        let x = Planar { channels: 3, height: 896, width: 896, data: (0..3 * 896 * 896).map(|i| i as f32).collect() };
        let v = p.views(&x);
        assert_eq!((v.vit.len(), v.convnext.len()), (17, 17));
        assert!(v.vit.iter().all(|v| v.width == 224) && v.convnext.iter().all(|v| v.width == 256));
        // Crop r1c2 starts at (x = 448, y = 224) of the square.
        assert_eq!(v.vit[1 + 4 + 2].at(0, 0, 0), x.at(0, 224, 448));
    }

    #[test]
    fn every_variant_has_its_view_counts() {
        let counts: Vec<_> = TilingPreset::ALL.iter().map(|p| (p.name, p.vit.view_count(), p.convnext.view_size())).collect();
        assert_eq!(
            counts,
            [("sphinx", 1, 256), ("sphinx-1k", 5, 256), ("sphinx-2k", 10, 256), ("sphinx-moe", 1, 512),
             ("sphinx-moe-1k", 5, 512), ("sphinx-tiny", 1, 512), ("sphinx-tiny-1k", 5, 512)]
        );
    }
}
