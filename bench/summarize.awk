# Turns benchmark rows ("impl op callers ops qps p50_us p99_us errors cpu_us_per_op", several
# rounds of each)
# into a markdown table of medians with the ratios of etcdc to the others.
function median(field, key,   m, i, j, t, v) {
  m = n[key]
  for (i = 1; i <= m; i++) v[i] = val[field, key, i] + 0
  for (i = 1; i <= m; i++)
    for (j = i + 1; j <= m; j++)
      if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
  return v[int((m + 1) / 2)]
}
function lat(key) { return sprintf("%d / %d", median("p50", key), median("p99", key)) }
{
  key = $1 " " $2 " " $3
  i = ++n[key]
  val["qps", key, i] = $5; val["p50", key, i] = $6; val["p99", key, i] = $7; val["cpu", key, i] = $9
  errors[$2 " " $3] += $8
}
function qps(key) { return (key in n) ? median("qps", key) : 0 }
function cellq(key) { return (key in n) ? sprintf("%d", median("qps", key)) : "n/a" }
function ratio(a, b) { return (b > 0) ? sprintf("%.2f", a / b) : "n/a" }
function cell(key) { return (key in n) ? lat(key) : "n/a" }
function cpu(key) { return (key in n) ? sprintf("%.0f", median("cpu", key)) : "n/a" }
END {
  print "| op | callers | etcdc QPS | etcdc async QPS | tonic threads QPS | tonic tasks QPS | v2 QPS | etcdc / tonic threads | etcdc async / tonic tasks | etcdc async / v2 | etcdc p50 / p99 us | etcdc async p50 / p99 | tonic threads p50 / p99 | tonic tasks p50 / p99 | v2 p50 / p99 | client CPU us/op: etcdc / async / tonic threads / tonic tasks / v2 | etcdc async / tonic tasks CPU | errors |"
  print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  nops = split("put range srange watch", ops, " ")
  ncs = split("1 16 256", cs, " ")
  for (o = 1; o <= nops; o++) {
    for (c = 1; c <= ncs; c++) {
      k = ops[o] " " cs[c]
      e = "etcdc " k; a = "etcdc-async " k; th = "tonic-threads " k; t = "tonic " k; v = "v2curl " k
      if (!(e in n)) continue
      cpus = cpu(e) " / " cpu(a) " / " cpu(th) " / " cpu(t) " / " cpu(v)
      cpur = ((a in n) && (t in n)) ? ratio(median("cpu", a), median("cpu", t)) : "n/a"
      printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |\n", ops[o], cs[c], cellq(e), cellq(a), cellq(th), cellq(t), cellq(v), ratio(qps(e), qps(th)), ratio(qps(a), qps(t)), ratio(qps(a), qps(v)), cell(e), cell(a), cell(th), cell(t), cell(v), cpus, cpur, errors[k]
    }
  }
  print ""
  print "| op | calls in flight | driven QPS | async QPS | tonic tasks QPS | v2 QPS | driven / tonic tasks | driven / v2 | driven / async | driven p50 / p99 us | async p50 / p99 | tonic tasks p50 / p99 | client CPU us/op: driven / async / tonic tasks | driven / tonic tasks CPU |"
  print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for (o = 1; o <= nops; o++) {
    for (c = 1; c <= ncs; c++) {
      k = ops[o] " " cs[c]
      d = "etcdc-driven " k; a = "etcdc-async " k; t = "tonic " k; v = "v2curl " k
      if (!(d in n)) continue
      cpur = (t in n) ? ratio(median("cpu", d), median("cpu", t)) : "n/a"
      printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", ops[o], cs[c], cellq(d), cellq(a), cellq(t), cellq(v), ratio(qps(d), qps(t)), ratio(qps(d), qps(v)), ratio(qps(d), qps(a)), cell(d), cell(a), cell(t), cpu(d) " / " cpu(a) " / " cpu(t), cpur
    }
  }
  print ""
  print "| op | calls in flight | epoll QPS | driven QPS | epoll / driven | epoll / tonic tasks | epoll p50 / p99 us | client CPU us/op: epoll / driven | epoll / driven CPU |"
  print "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  for (o = 1; o <= nops; o++) {
    for (c = 1; c <= ncs; c++) {
      k = ops[o] " " cs[c]
      f = "etcdc-epoll " k; d = "etcdc-driven " k; t = "tonic " k
      if (!(f in n)) continue
      cpur = (d in n) ? ratio(median("cpu", f), median("cpu", d)) : "n/a"
      printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", ops[o], cs[c], cellq(f), cellq(d), ratio(qps(f), qps(d)), ratio(qps(f), qps(t)), cell(f), cpu(f) " / " cpu(d), cpur
    }
  }
}
