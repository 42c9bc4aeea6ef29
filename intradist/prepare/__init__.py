"""Data preparation: the shipped Multi30k and IWSLT'14 into fairseq data-bins, XTREME (PAN-X, TyDiQA-GoldP) into the files ``intradist train xtreme`` reads."""
