"""The tables behind ``vast_magic.query``: every offer column and GPU-name constant.

The names and values are the facts of the official ``vastai.data.query``
(vastai 1.9.1): 96 distinct column names (real columns of
``ask_contract_offers``, the virtual columns the API converts, and the
aliases it remaps) and 144 GPU-name constants. What the official module does
not have, and we add, is a value *kind* per column (from the offer record's
types and the ``vastai search offers`` field list) so a wrong value fails
when the query is written, not as an empty search later, and the *unit
factor* between what the Vast docs promise (GB, days) and what the offer
search body holds (MB, seconds).
"""
from __future__ import annotations

import types

#: value kinds: "int" whole numbers, "number" any real number, "bool" True/False, "str" text
_KIND_COLUMNS = {
    "int": """
        id ask_contract_id bundle_id bundled_results compute_cap cpu_cores direct_port_count
        driver_vers geolocode gpu_ids gpu_lanes host_id hosting_type machine_id num_gpus vericode
        cluster_id avail_vol_ask_id
    """,
    "number": """
        bw_nvlink cpu_cores_effective cpu_ghz cpu_ram credit_discount_max cuda_max_good disk_bw
        disk_space dlperf dlperf_per_dphtotal dph_base dph_total duration end_date
        flops_per_dphtotal gpu_frac gpu_mem_bw gpu_ram gpu_total_ram gpu_max_power gpu_max_temp
        inet_down inet_down_cost inet_up inet_up_cost min_bid pci_gen pcie_bw reliability
        reliability_mult score start_date storage_cost storage_total_cost total_flops
        vram_costperhour expected_reliability avail_vol_dph avail_vol_size nw_disk_min_bw
        nw_disk_max_bw nw_disk_avg_bw platform_fee allocated_storage target_reliability
        reliability2 dphtotal gpu_totalram gpu_totalram_GB cpu_ram_GB gpu_ram_GB
    """,
    "bool": """
        external has_avx gpu_display_active is_bid rentable rented static_ip vms_enabled
        is_vm_deverified datacenter verified
    """,
    "str": """
        cpu_arch cpu_name disk_name driver_version gpu_arch gpu_name hostname mobo_name os_version
        public_ipaddr geolocation logo webpage verification resource_type ubuntu_version
    """,
}

#: column name -> kind
COLUMN_KINDS: types.MappingProxyType = types.MappingProxyType(
    {name: kind for kind, names in _KIND_COLUMNS.items() for name in names.split()})

#: the Python variable of a column differs from its name only where the name is a builtin
VARIABLE_OF = types.MappingProxyType({name: ("id_" if name == "id" else name) for name in COLUMN_KINDS})

#: user units -> offer-search units: the docs say GB and days, the search body holds MB and
#: seconds (the ``_GB`` aliases are converted by the server itself, so they are not here)
UNIT_FACTORS = types.MappingProxyType({"cpu_ram": 1000, "gpu_ram": 1000, "gpu_total_ram": 1000,
                                       "duration": 86400})

#: the unit a user writes, for error messages
UNIT_NAMES = types.MappingProxyType({"cpu_ram": "GB", "gpu_ram": "GB", "gpu_total_ram": "GB",
                                     "duration": "days", "cpu_ram_GB": "GB", "gpu_ram_GB": "GB",
                                     "gpu_totalram_GB": "GB"})

_GPU_CONSTANT_NAMES = """
    A10 A10g A16 A30 A40 A100_PCIE A100_SXM4 A100_SXM A100X A800_PCIE B200 GH200_SXM H100_PCIE
    H100_SXM H100_NVL H200 H200_NVL L4 L40 L40S Tesla_K20c Tesla_K80 Tesla_M40 Tesla_P4 Tesla_P6
    Tesla_P40 Tesla_P100 Tesla_T4 Tesla_V100
    GeForce_970 GTX_750_Ti GTX_1050 GTX_1050_Ti GTX_1060 GTX_1070 GTX_1070_Ti GTX_1080 GTX_1080_Ti
    GTX_1650 GTX_1650_S GTX_1650_Ti GTX_1660 GTX_1660_S GTX_1660_Ti GTX_TITAN_X
    RTX_2060 RTX_2060S RTX_2070 RTX_2070S RTX_2080 RTX_2080S RTX_2080_Ti
    RTX_3050 RTX_3060 RTX_3060_laptop RTX_3060_Ti RTX_3070 RTX_3070_laptop RTX_3070_Ti RTX_3080
    RTX_3080_Ti RTX_3090 RTX_3090_Ti
    RTX_4060 RTX_4060_laptop RTX_4060_Ti RTX_4070 RTX_4070_laptop RTX_4070S RTX_4070S_Ti RTX_4070_Ti
    RTX_4080 RTX_4080_laptop RTX_4080S RTX_4090 RTX_4090D RTX_4090_Ti
    RTX_5060 RTX_5060_Ti RTX_5070 RTX_5070_Ti RTX_5080 RTX_5090 RTX_5090_Ti
    Titan_RTX Titan_V TITAN_V_CEO Titan_X Titan_Xp
    Quadro_K620 Quadro_K2200 Quadro_P2000 Quadro_P4000 Quadro_P5000 Quadro_P6000 Quadro_GP100
    Quadro_GV100 Q_RTX_4000 Q_RTX_5000 Q_RTX_6000 Q_RTX_8000
    RTX_A2000 RTX_A4000 RTX_A4500 RTX_A5000 RTX_A6000
    RTX_2000Ada RTX_4000Ada RTX_4500Ada RTX_5000Ada RTX_5880Ada RTX_6000Ada
    RTX_PRO_4000 RTX_PRO_4000_Mobile RTX_PRO_4500 RTX_PRO_5000 RTX_PRO_6000 RTX_PRO_6000_S
    RTX_PRO_6000_WS RTX_PRO_6000_Max_Q
    CMP_50HX CMP_170HX P104_100 P106_100
    InstinctMI50 InstinctMI100 InstinctMI210 InstinctMI250X
    PRO_W6800 PRO_W7800 PRO_W7900 Pro_V620 Radeon_VII Radeon_Pro_VII
    RX_6800 RX_6800_XT RX_6900_XT RX_6950_XT RX_7600 RX_7700_XT RX_7800_XT RX_7900_GRE RX_7900_XT
    RX_7900_XTX
"""

#: the three names whose value is not simply the name with "_" read as a space
_GPU_NAME_EXCEPTIONS = {"RTX_PRO_6000_Max_Q": "RTX PRO 6000 Max-Q", "P104_100": "P104-100",
                        "P106_100": "P106-100"}

#: constant -> the GPU name Vast uses (e.g. RTX_4090 -> "RTX 4090")
GPU_CONSTANTS = types.MappingProxyType(
    {name: _GPU_NAME_EXCEPTIONS.get(name, name.replace("_", " ")) for name in _GPU_CONSTANT_NAMES.split()})
