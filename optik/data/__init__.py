"""Data layer, bottom up (each layer imports only those below it; no submodule is imported here):

    image, views, checks, splits, collate, synthetic    decoding, dataset views, reader checks,
                                                        DataSplits + splitters, batching, built-ins
    dataset, detection_dataset, segmentation_dataset    the torch Datasets of each task
    formats/                                            readers: file formats -> datasets
    sources                                             the one `data=` resolver (every task)
    detection, segmentation, convert                    task-level imports; `optik data convert`

Transform presets (`transforms`, `detect_transforms`, `seg_transforms`) sit beside the datasets.
"""
