"""The sources the engine cites (clinical-reference.md holds the excerpts and status tags)."""

from __future__ import annotations

from cds.engine.domain import Reference

KHATRI_2009 = Reference(
    "Khatri BO et al. Effect of plasma exchange in accelerating natalizumab clearance and restoring "
    "leukocyte function. Neurology 2009;72(5):402-409",
    "https://pubmed.ncbi.nlm.nih.gov/19188571/",
)
VENNEGOOR_2015 = Reference(
    "Vennegoor A et al. Application of serum natalizumab levels during plasma exchange in MS patients "
    "with progressive multifocal leukoencephalopathy. Mult Scler 2015;21(4):481-484",
    "https://doi.org/10.1177/1352458514541507",
)
US_PI = Reference(
    "TYSABRI (natalizumab) US Prescribing Information, section 12.3 (half-life 11 ± 4 days)",
    "https://api.fda.gov/drug/label.json?search=openfda.generic_name:%22natalizumab%22",
)
SMPC_EU = Reference(
    "Tysabri EU Summary of Product Characteristics, section 5.2 (steady-state half-life 16 ± 4 days)",
    "https://docslib.org/doc/12634509/tysabri-inn-natalizumab",
)
HANAFUSA_2014 = Reference(
    "Hanafusa N. Determination of dosage and frequency of therapy. Springer 2014 (IgG re-equilibration after apheresis)",
    "https://doi.org/10.1007/978-4-431-54412-8_14",
)
LANDI_2017 = Reference(
    "Landi D et al. Neurology 2017;88(12):1144-1152 (219 natalizumab-PML cases; PLEX did not improve outcome)",
    "https://doi.org/10.1212/WNL.0000000000003740",
)
MURALIDHARAN_2017 = Reference(
    "Muralidharan KK et al. J Clin Pharmacol 2017 (natalizumab population PK; antibodies raise clearance)",
    "https://doi.org/10.1002/jcph.894",
)
TAN_2011 = Reference(
    "Tan IL et al. Neurology 2011;77:1061-1067 (IRIS in 42 natalizumab-PML cases)",
    "https://doi.org/10.1212/WNL.0b013e31822e55e7",
)
WENNING_2009 = Reference(
    "Wenning W et al. N Engl J Med 2009;361:1075-1080 (natalizumab-PML treated with PLEX and IA)",
    "https://doi.org/10.1056/NEJMoa0810257",
)
STEFOSKI_2019 = Reference(
    "Stefoski D et al. Ann Clin Transl Neurol 2019;6:923-931 (IRIS timing in 17 natalizumab-PML cases)",
    "https://doi.org/10.1002/acn3.776",
)
VERMERSCH_2011 = Reference(
    "Vermersch P et al. Neurology 2011;76(20):1697-1704 (outcome of natalizumab-PML)",
    "https://n.neurology.org/content/76/20/1697",
)
CLINICSPEAK_2014 = Reference(
    "Giovannoni G. ClinicSpeak: plasma exchange to remove natalizumab as a treatment for PML (2014, expert blog)",
    "https://multiple-sclerosis-research.org/2014/08/clinicspeak-plasma-exchange-to-remove-natalizumab-as-a-treatment-for-pml/",
)
CORTESE_2021 = Reference(
    "Cortese I et al. Nat Rev Neurol 2021 (PML management review; caution with steroids in IRIS)",
    "https://www.ncbi.nlm.nih.gov/pmc/articles/PMC7678594/",
)
FOX_2014 = Reference(
    "Fox RJ et al. (RESTORE) Neurology 2014;82(17):1491-1498 (disease activity after natalizumab interruption)",
    "https://n.neurology.org/content/82/17/1491",
)
REBOUND_2017 = Reference(
    "Brain Behav 2017;7:e00671 (severe rebound after natalizumab withdrawal, case series)",
    "https://doi.org/10.1002/brb3.671",
)
PAPEIX_2016 = Reference(
    "Papeix C et al. (TYSEDMUS) Neurol Neuroimmunol Neuroinflamm 2016 (relapse after natalizumab withdrawal)",
    "https://www.ncbi.nlm.nih.gov/pmc/articles/PMC5087255/",
)
TECFIDERA_US_PI = Reference(
    "TECFIDERA (dimethyl fumarate) US Prescribing Information, sections 2.1 and 5.4 (a CBC with "
    "lymphocyte count within 6 months before starting; lymphopenia and PML)",
    "https://api.fda.gov/drug/label.json?search=openfda.generic_name:%22dimethyl+fumarate%22",
)
US_PI_LYMPHOCYTES = Reference(
    "TYSABRI (natalizumab) US Prescribing Information, section 6 (increases in circulating lymphocytes "
    "on natalizumab)",
    "https://api.fda.gov/drug/label.json?search=openfda.generic_name:%22natalizumab%22",
)
