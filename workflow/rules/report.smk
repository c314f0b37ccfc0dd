# Stage "report": the summary table (cluster x method: predicted, simulated and served tokens/s,
# perplexity, planning time, solver gap) and the figures, in results/report/ and in
# `snakemake --report report.html`.


rule report:
    input:
        unpack(report_inputs),
    output:
        table=report(
            f"{RESULTS}/report/summary.csv",
            caption="../report/summary.rst",
            category="Summary",
        ),
        markdown=f"{RESULTS}/report/summary.md",
        dataset=report(
            f"{RESULTS}/report/dataset.md",
            caption="../report/dataset.rst",
            category="Summary",
        ),
        throughput=report(
            f"{RESULTS}/report/throughput.png",
            caption="../report/throughput.rst",
            category="Figures",
        ),
        frontier=report(
            f"{RESULTS}/report/frontier.png",
            caption="../report/frontier.rst",
            category="Figures",
        ),
        timeline=report(
            f"{RESULTS}/report/timeline.png",
            caption="../report/timeline.rst",
            category="Figures",
        ),
    log:
        f"{LOGS}/report/report.log",
    conda:
        "../envs/llmpq.yaml"
    script:
        "../scripts/report.py"
