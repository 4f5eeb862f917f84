"""Scene outputs of a segmentation: the segmentation node (one named segment per label value,
with terminology), the variance volume with its overlay and colour legend, hiding an earlier
result. Arrays arrive in the engine's (X, Y, Z) = (I, J, K) order on the input's voxels."""
from __future__ import annotations

from typing import List

import numpy as np
import slicer
import vtk

from . import display
from .geometry import box_object_to_ras, ijk_to_kji

# Slicer's built-in colour table used when the file-based Inferno table is not loaded.
FALLBACK_VARIANCE_COLOR_NODE_ID = "vtkMRMLColorTableNodeIron"


def createSegmentation(inputVolume, labelsIJK: np.ndarray, labelNames, created: List):
    """A segmentation node on the input's geometry with one segment per label value."""
    scene = inputVolume.GetScene()
    segmentationNode = scene.AddNewNodeByClass(
        "vtkMRMLSegmentationNode", scene.GenerateUniqueName(f"{inputVolume.GetName()} M3D-NCA segmentation"))
    created.append(segmentationNode)
    segmentationNode.CreateDefaultDisplayNodes()
    # Transform first: the reference geometry is stored relative to the node's parent transform.
    segmentationNode.SetAndObserveTransformNodeID(inputVolume.GetTransformNodeID())
    segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(inputVolume)
    labelsKJI = ijk_to_kji(np.asarray(labelsIJK))
    expected = tuple(reversed(inputVolume.GetImageData().GetDimensions()))
    if labelsKJI.shape != expected:
        raise RuntimeError(f"segmentation shape {labelsKJI.shape} does not match the input {expected}")
    segmentation = segmentationNode.GetSegmentation()
    for value, name, color, terminology in display.segment_specs(labelNames):
        segmentId = segmentation.AddEmptySegment("", name, color)
        segment = segmentation.GetSegment(segmentId)
        if terminology:
            segment.SetTag(segment.GetTerminologyEntryTagName(), terminology)
        mask = (labelsKJI == value).astype(np.uint8)
        if mask.any():
            setSegmentMask(segmentationNode, segmentId, mask, inputVolume)
    return segmentationNode


def setSegmentMask(segmentationNode, segmentId: str, maskKJI: np.ndarray, inputVolume) -> None:
    """Set a segment's binary labelmap from a (K, J, I) mask on the input's voxels. Unlike
    ``slicer.util.updateSegmentBinaryLabelmapFromArray`` this adds no temporary node to the
    scene (that one leaves a labelmap display node behind for every segment)."""
    from vtk.util import numpy_support

    image = slicer.vtkOrientedImageData()
    image.SetDimensions(maskKJI.shape[2], maskKJI.shape[1], maskKJI.shape[0])
    scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(maskKJI).ravel(), deep=True,
                                         array_type=vtk.VTK_UNSIGNED_CHAR)
    image.GetPointData().SetScalars(scalars)
    ijkToRAS = vtk.vtkMatrix4x4()
    inputVolume.GetIJKToRASMatrix(ijkToRAS)  # the segmentation has the input's parent transform
    image.SetImageToWorldMatrix(ijkToRAS)
    if not slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
            image, segmentationNode, segmentId, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE):
        raise RuntimeError(f"cannot set the voxels of segment {segmentId}")


def createVariance(inputVolume, varianceIJK: np.ndarray, created: List):
    """A scalar volume of the variance (std) map on the input's geometry, coloured and thresholded."""
    scene = inputVolume.GetScene()
    ijkToRAS = vtk.vtkMatrix4x4()
    inputVolume.GetIJKToRASMatrix(ijkToRAS)
    variance = np.asarray(varianceIJK, dtype=np.float32)
    varianceNode = slicer.util.addVolumeFromArray(
        ijk_to_kji(variance), ijkToRAS=ijkToRAS,
        name=scene.GenerateUniqueName(f"{inputVolume.GetName()} M3D-NCA variance"))
    created.append(varianceNode)
    varianceNode.SetAndObserveTransformNodeID(inputVolume.GetTransformNodeID())
    settings = display.overlay_settings(variance)
    displayNode = varianceNode.GetScalarVolumeDisplayNode()
    colorID = display.VARIANCE_COLOR_NODE_ID
    if scene.GetNodeByID(colorID) is None:
        colorID = FALLBACK_VARIANCE_COLOR_NODE_ID
    displayNode.SetAndObserveColorNodeID(colorID)
    displayNode.SetAutoWindowLevel(0)
    displayNode.SetWindowLevelMinMax(settings.window_min, settings.window_max)
    displayNode.SetAutoThreshold(0)
    displayNode.SetThreshold(settings.threshold, max(settings.window_max, settings.threshold) * 10.0)
    displayNode.SetApplyThreshold(1)
    legend = slicer.modules.colors.logic().AddDefaultColorLegendDisplayNode(varianceNode)
    if legend:
        created.append(legend)
        legend.SetTitleText("M3D-NCA variance (std)")
    return varianceNode


def createSearchBoxes(inputVolume, sides, created: List) -> List:
    """One hidden, locked markups ROI per side's box of a whole-head result: where that
    hippocampus was looked for (none for a crop). Each in its side's light colour."""
    scene = inputVolume.GetScene()
    boxes = []
    for side in sides:
        if not side.get("box"):
            continue
        title = f"{inputVolume.GetName()} {side.get('side') or 'crop'} hippocampus box"
        roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", scene.GenerateUniqueName(title))
        created.append(roi)
        roi.CreateDefaultDisplayNodes()
        roi.SetAndObserveTransformNodeID(inputVolume.GetTransformNodeID())
        matrix, size = box_object_to_ras(side["box"])
        objectToNode = vtk.vtkMatrix4x4()
        for row in range(4):
            for column in range(4):
                objectToNode.SetElement(row, column, float(matrix[row, column]))
        roi.SetSize(*(float(s) for s in size))
        roi.SetAndObserveObjectToNodeMatrix(objectToNode)
        roi.SetLocked(True)
        roi.GetDisplayNode().SetSelectedColor(display.light_rgb(side.get("quality", "unknown")))
        roi.SetDisplayVisibility(False)
        boxes.append(roi)
    return boxes


def removeNodes(nodes) -> None:
    """Remove the nodes with their display and storage nodes (MRML does not remove those)."""
    for node in reversed(list(nodes)):
        scene = node.GetScene()
        if scene is None or not scene.IsNodePresent(node):
            continue
        owned = []
        if hasattr(node, "GetNumberOfDisplayNodes"):
            owned += [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
        if hasattr(node, "GetNumberOfStorageNodes"):
            owned += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
        scene.RemoveNode(node)
        for other in owned:
            if other is not None and scene.IsNodePresent(other):
                scene.RemoveNode(other)


INPUT_ATTRIBUTE = "M3DNCASegment.InputVolumeID"
VARIANCE_REFERENCE_ROLE = "M3DNCASegment.variance"
SEARCH_BOX_REFERENCE_ROLE = "M3DNCASegment.searchBox"


def markResult(inputVolume, segmentationNode, varianceNode, searchBoxes=()) -> None:
    """Record on the segmentation which volume it belongs to, its variance volume and search boxes."""
    segmentationNode.SetAttribute(INPUT_ATTRIBUTE, inputVolume.GetID())
    segmentationNode.SetNodeReferenceID(VARIANCE_REFERENCE_ROLE, varianceNode.GetID())
    for box in searchBoxes:
        segmentationNode.AddNodeReferenceID(SEARCH_BOX_REFERENCE_ROLE, box.GetID())


def searchBoxesOf(segmentationNode) -> List:
    """The search-box ROI nodes of a result (none for a crop)."""
    count = segmentationNode.GetNumberOfNodeReferences(SEARCH_BOX_REFERENCE_ROLE)
    boxes = [segmentationNode.GetNthNodeReference(SEARCH_BOX_REFERENCE_ROLE, i) for i in range(count)]
    return [box for box in boxes if box is not None]


def showSearchBoxes(segmentationNode, visible: bool) -> None:
    """Show or hide a result's search boxes."""
    for box in searchBoxesOf(segmentationNode):
        box.SetDisplayVisibility(bool(visible))


def resultsOf(inputVolume):
    """(segmentation, variance) of every earlier result of ``inputVolume`` in its scene."""
    scene = inputVolume.GetScene()
    found = []
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLSegmentationNode")
        if node.GetAttribute(INPUT_ATTRIBUTE) == inputVolume.GetID():
            found.append((node, node.GetNodeReference(VARIANCE_REFERENCE_ROLE)))
    return found


def hideOutputs(segmentationNode, varianceNode) -> None:
    """Hide an earlier result (kept in the scene), so new contours are not drawn over old ones."""
    if segmentationNode and slicer.mrmlScene.IsNodePresent(segmentationNode):
        segmentationNode.SetDisplayVisibility(False)
        showSearchBoxes(segmentationNode, False)
    if varianceNode and slicer.mrmlScene.IsNodePresent(varianceNode):
        legend = slicer.modules.colors.logic().GetColorLegendDisplayNode(varianceNode)
        if legend:
            legend.SetVisibility(False)


def showVarianceOverlay(inputVolume, varianceNode, opacity: float) -> None:
    """Input as background, variance as coloured foreground (see-through below threshold)."""
    slicer.util.setSliceViewerLayers(background=inputVolume, foreground=varianceNode,
                                     foregroundOpacity=display.clamp_opacity(opacity))
