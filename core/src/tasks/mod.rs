//! SPHINX's task mix (docs/spec.md §5.1, §6): task-specific instructions, answers carrying boxes
//! and keypoints as text, parsed into data, and drawn over the original image.

mod answer;
mod draw;
mod prompts;

pub use answer::{parse_answer, Answer, BoxCoords, Entity, PointCoords, COCO_KEYPOINTS, COCO_SKELETON, DEMO_COLORS};
pub use draw::{draw_answer, rasterize, DrawCommand};
pub use prompts::{Task, TaskKind};
