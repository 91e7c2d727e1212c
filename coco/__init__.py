"""MS-COCO 2014 for zero-shot evaluation: captions and the caption sampling rule (`captions`),
reference images and their cached Inception statistics (`reference`)."""
