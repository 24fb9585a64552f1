//! Task-specific instructions, verbatim from the official demo and evaluation prompts
//! (docs/spec.md §6; `multi_turn_mm_box.py`, `eval_mm/annotations/annotation_config.json`).
//! Region coordinates are normalised to the padded square and written with two
//! decimals and `", "` separators, as people write them in prompts.

use serde::Serialize;

/// A task and its parameters.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum Task {
    /// Free chat: the text is sent as-is.
    Chat { text: String },
    /// General question answering.
    Qa,
    DetailedCaption,
    ShortCaption,
    /// Referring expression comprehension: the box of `expression`.
    Ground { expression: String },
    /// Relationship grounding (the demo's text has a space before the colon).
    RelationGround { expression: String },
    /// A caption with a box for each mentioned object.
    GroundedCaption,
    /// Every instance of `category`.
    Detect { category: String },
    /// COCO keypoints of the person in `region` ([x1, y1, x2, y2], normalised).
    Keypoints { region: [f64; 4] },
    /// Text detection (OCR) with boxes.
    Ocr,
    ChartToTable,
    /// Short-answer VQA, as in the benchmark evaluations.
    ShortVqa { question: String },
    /// Region captioning. UNVERIFIED prompt: the paper's wording could not be checked;
    /// this is the form docs/spec.md §6 reports.
    RegionCaption { region: [f64; 4] },
    /// Document layout detection. UNVERIFIED prompt: no official text was found; this one
    /// follows the wording of the text-detection task.
    DocumentLayout,
}

/// Task names for command lines and JS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    Chat,
    Qa,
    DetailedCaption,
    ShortCaption,
    Ground,
    RelationGround,
    GroundedCaption,
    Detect,
    Keypoints,
    Ocr,
    ChartToTable,
    ShortVqa,
    RegionCaption,
    DocumentLayout,
}

impl TaskKind {
    pub const ALL: [(&'static str, TaskKind, &'static str); 14] = [
        ("chat", TaskKind::Chat, "free chat: the query is sent as-is"),
        ("qa", TaskKind::Qa, "general question answering"),
        ("caption", TaskKind::DetailedCaption, "detailed caption"),
        ("short-caption", TaskKind::ShortCaption, "one-sentence caption"),
        ("ground", TaskKind::Ground, "box of a referring expression (--query)"),
        ("relation", TaskKind::RelationGround, "box of a relationship, e.g. 'people on car' (--query)"),
        ("grounded-caption", TaskKind::GroundedCaption, "caption with a box per mentioned object"),
        ("detect", TaskKind::Detect, "boxes of every object of a category (--query)"),
        ("keypoints", TaskKind::Keypoints, "human keypoints of the person in a region (--region)"),
        ("ocr", TaskKind::Ocr, "text detection with boxes"),
        ("chart", TaskKind::ChartToTable, "chart to table"),
        ("vqa", TaskKind::ShortVqa, "short-answer VQA (--query)"),
        ("region-caption", TaskKind::RegionCaption, "caption of a region (--region) [UNVERIFIED prompt]"),
        ("layout", TaskKind::DocumentLayout, "document layout boxes [UNVERIFIED prompt]"),
    ];

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _, _)| *n == name).map(|(_, k, _)| *k)
    }

    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, k, _)| *k == self).map_or("?", |(n, _, _)| n)
    }

    /// Builds the task from a free-text query and a normalised region, naming what is missing.
    pub fn build(self, query: Option<&str>, region: Option<[f64; 4]>) -> Result<Task, String> {
        let q = || query.map(str::to_string).ok_or_else(|| format!("task '{}' needs a query", self.name()));
        let r = || region.ok_or_else(|| format!("task '{}' needs a region", self.name()));
        Ok(match self {
            TaskKind::Chat => Task::Chat { text: q()? },
            TaskKind::Qa => Task::Qa,
            TaskKind::DetailedCaption => Task::DetailedCaption,
            TaskKind::ShortCaption => Task::ShortCaption,
            TaskKind::Ground => Task::Ground { expression: q()? },
            TaskKind::RelationGround => Task::RelationGround { expression: q()? },
            TaskKind::GroundedCaption => Task::GroundedCaption,
            TaskKind::Detect => Task::Detect { category: q()? },
            TaskKind::Keypoints => Task::Keypoints { region: r()? },
            TaskKind::Ocr => Task::Ocr,
            TaskKind::ChartToTable => Task::ChartToTable,
            TaskKind::ShortVqa => Task::ShortVqa { question: q()? },
            TaskKind::RegionCaption => Task::RegionCaption { region: r()? },
            TaskKind::DocumentLayout => Task::DocumentLayout,
        })
    }
}

/// `[x1, y1, x2, y2]` with two decimals.
fn region_text(r: &[f64; 4]) -> String {
    format!("[{:.2}, {:.2}, {:.2}, {:.2}]", r[0], r[1], r[2], r[3])
}

/// Drops one trailing period so `{expr}.` does not end in two.
fn sentence(s: &str) -> &str {
    let s = s.trim();
    s.strip_suffix('.').unwrap_or(s)
}

impl Task {
    /// The user turn sent to the model.
    pub fn instruction(&self) -> String {
        match self {
            Task::Chat { text } => text.clone(),
            Task::Qa => "What's in the image?".into(),
            Task::DetailedCaption => "Generate a detailed description about the image.".into(),
            Task::ShortCaption => "Provide a one-sentence caption for the provided image.".into(),
            Task::Ground { expression } => {
                format!("Please provide the bounding box coordinate of the region this sentence describes: {}.", sentence(expression))
            }
            Task::RelationGround { expression } => {
                format!("Please provide the bounding box coordinate of the region this sentence describes : {}.", sentence(expression))
            }
            Task::GroundedCaption => "Describe the image concisely. Include the bounding box for each mentioned object.".into(),
            Task::Detect { category } => format!("Detect all {} shown in the image.", category.trim()),
            Task::Keypoints { region } => format!("Detect the key points of the person in the region {}.", region_text(region)),
            Task::Ocr => "Please detect all texts and provide their bounding box coordinate.".into(),
            Task::ChartToTable => "Convert this chart to a table.".into(),
            Task::ShortVqa { question } => format!("{}\nAnswer the question using a single word or phrase.", question.trim()),
            Task::RegionCaption { region } => format!("Please provide a short description for this region: {}", region_text(region)),
            Task::DocumentLayout => "Please detect all layout elements and provide their bounding box coordinate.".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_the_official_texts() {
        let cases = [
            (Task::Qa, "What's in the image?"),
            (Task::DetailedCaption, "Generate a detailed description about the image."),
            (Task::ShortCaption, "Provide a one-sentence caption for the provided image."),
            (
                Task::Ground { expression: "blue backpack".into() },
                "Please provide the bounding box coordinate of the region this sentence describes: blue backpack.",
            ),
            (
                Task::RelationGround { expression: "people on car".into() },
                "Please provide the bounding box coordinate of the region this sentence describes : people on car.",
            ),
            (Task::GroundedCaption, "Describe the image concisely. Include the bounding box for each mentioned object."),
            (Task::Detect { category: "people".into() }, "Detect all people shown in the image."),
            (
                Task::Keypoints { region: [0.1, 0.25, 0.5, 0.875] },
                "Detect the key points of the person in the region [0.10, 0.25, 0.50, 0.88].",
            ),
            (Task::Ocr, "Please detect all texts and provide their bounding box coordinate."),
            (Task::ChartToTable, "Convert this chart to a table."),
            (
                Task::ShortVqa { question: "What colour is the bus?".into() },
                "What colour is the bus?\nAnswer the question using a single word or phrase.",
            ),
        ];
        for (task, want) in cases {
            assert_eq!(task.instruction(), want);
        }
        assert_eq!(
            Task::Ground { expression: "the red square.".into() }.instruction(),
            "Please provide the bounding box coordinate of the region this sentence describes: the red square."
        );
    }

    #[test]
    fn tasks_name_what_they_need() {
        assert_eq!(TaskKind::Ground.build(None, None).unwrap_err(), "task 'ground' needs a query");
        assert_eq!(TaskKind::Keypoints.build(None, None).unwrap_err(), "task 'keypoints' needs a region");
        assert!(TaskKind::ALL.iter().all(|(n, k, _)| TaskKind::parse(n) == Some(*k)));
    }
}
